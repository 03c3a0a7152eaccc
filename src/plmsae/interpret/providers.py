"""LLM providers for the explain stage: Anthropic and OpenAI-compatible servers through their
official SDKs, with an on-disk cache, retries, a cost budget and a price table.

Keys are read by the SDKs from the environment (``ANTHROPIC_API_KEY``, ``OPENAI_API_KEY``);
plmsae never reads them into its own variables, logs or files. The cache stores requests
(model, messages, parameters) and reply texts, never headers.
"""

from __future__ import annotations

import logging
import math
import os
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from plmsae._util import InputError, read_json, sha256_json, write_json

log = logging.getLogger(__name__)

DEFAULT_ANTHROPIC_MODEL = "claude-sonnet-4-6"

# Estimated list prices in USD per million tokens (input, output), from the vendors' public price
# pages; matched by the longest model-name prefix. The bare family prefixes ("claude-sonnet-" ...)
# are a guess for newer models of the family. These are ESTIMATES for --dry-run and --max-cost:
# check your provider's bill. Other models need --price IN,OUT (local servers: --price 0,0).
PRICES_USD_PER_MTOK: dict[str, tuple[float, float]] = {
    "claude-opus-4-0": (15.0, 75.0),
    "claude-opus-4-1": (15.0, 75.0),
    "claude-opus-4-2025": (15.0, 75.0),
    "claude-opus-": (5.0, 25.0),  # claude-opus-4-5 and later
    "claude-sonnet-": (3.0, 15.0),
    "claude-3-7-sonnet": (3.0, 15.0),
    "claude-3-5-sonnet": (3.0, 15.0),
    "claude-haiku-": (1.0, 5.0),  # claude-haiku-4-5 and later
    "claude-3-5-haiku": (0.8, 4.0),
    "claude-3-haiku": (0.25, 1.25),
    "gpt-4o-mini": (0.15, 0.6),
    "gpt-4o": (2.5, 10.0),
    "gpt-4.1-nano": (0.1, 0.4),
    "gpt-4.1-mini": (0.4, 1.6),
    "gpt-4.1": (2.0, 8.0),
    "gpt-5-nano": (0.05, 0.4),
    "gpt-5-mini": (0.25, 2.0),
    "gpt-5": (1.25, 10.0),
}
CHARS_PER_TOKEN = 3.5  # rough average for English prose mixed with GO IDs; used for estimates only
CACHE_FORMAT = 1


def price_for(model: str, override: str | None = None) -> tuple[float, float] | None:
    """(input, output) USD per million tokens for ``model``; ``override`` is "IN,OUT"."""
    if override:
        try:
            p_in, p_out = (float(x) for x in override.split(","))
        except ValueError:
            raise InputError(
                f"--price {override!r} is not two numbers.",
                record="--price",
                fix="write it as IN,OUT in USD per million tokens, e.g. 3,15.",
            ) from None
        return p_in, p_out
    for prefix in sorted(PRICES_USD_PER_MTOK, key=len, reverse=True):
        if model.startswith(prefix):
            return PRICES_USD_PER_MTOK[prefix]
    return None


def estimate_tokens(text: str) -> int:
    """A rough token count of ``text`` (for estimates only)."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


@dataclass(frozen=True)
class LLMSpec:
    """Which LLM explains: provider and model (``LLMSpec("offline", "")`` for no LLM)."""

    provider: str  # "anthropic" | "openai" | "offline"
    model: str  # "" for offline

    @property
    def name(self) -> str:
        return self.provider if self.provider == "offline" else f"{self.provider}:{self.model}"


def parse_llm(llm: str | None) -> LLMSpec:
    """``auto`` (default): Anthropic with :data:`DEFAULT_ANTHROPIC_MODEL` when
    ``ANTHROPIC_API_KEY`` is set, else ``offline``; or ``offline``, ``anthropic[:MODEL]``,
    ``openai:MODEL`` (MODEL may contain colons, e.g. Ollama's ``llama3.1:8b``)."""
    llm = (llm or "auto").strip()
    if llm == "auto":
        return (
            LLMSpec("anthropic", DEFAULT_ANTHROPIC_MODEL)
            if os.environ.get("ANTHROPIC_API_KEY")
            else LLMSpec("offline", "")
        )
    if llm == "offline":
        return LLMSpec("offline", "")
    provider, _, model = llm.partition(":")
    if provider == "anthropic":
        return LLMSpec("anthropic", model or DEFAULT_ANTHROPIC_MODEL)
    if provider == "openai" and model:
        return LLMSpec("openai", model)
    raise InputError(
        f"--llm {llm!r} is not a known provider.",
        record="--llm",
        fix="use offline, anthropic:MODEL or openai:MODEL (with --base-url for a "
        "local server such as vLLM, llama.cpp or Ollama).",
    )


class BudgetExceeded(Exception):
    """The next call could take the run over --max-cost; it was not made."""


class CallFailed(Exception):
    """A call that failed after its retries (recorded for the feature; the run goes on)."""


@dataclass
class Reply:
    """One completion: its text, the tokens and cost reported for it, whether from the cache."""

    text: str
    input_tokens: int
    output_tokens: int
    cost_usd: float
    cached: bool


@dataclass
class Usage:
    """What a client has spent so far (cached replies cost nothing again)."""

    calls: int = 0  # completions asked for (cached or not)
    cached: int = 0  # served from llm_cache/
    requests: int = 0  # HTTP requests sent, retries included
    retries: int = 0
    input_tokens: int = 0  # as reported by the provider, uncached calls only
    output_tokens: int = 0
    cost_usd: float = 0.0  # from reported usage and the price table

    def as_dict(self) -> dict:
        return {**self.__dict__, "cost_usd": round(self.cost_usd, 6)}


@dataclass
class LLMClient:
    """One provider + model; ``complete`` is thread-safe."""

    spec: LLMSpec
    cache_dir: Path
    base_url: str | None = None
    max_cost: float | None = None
    price: tuple[float, float] | None = None
    max_retries: int = 5
    retry_delay: float = 1.0  # first backoff delay (s); doubles per attempt, with jitter
    max_delay: float = 60.0  # cap on any single wait, retry-after included
    timeout: float = 120.0  # per request (s)
    temperature: float | None = (
        0.0  # OpenAI-compatible only: the Anthropic SDK 2.x has no sampling params
    )
    usage: Usage = field(default_factory=Usage)

    def __post_init__(self):
        self._lock = threading.Lock()
        self._reserved = 0.0
        self._client = None
        self._sdk = None
        if self.max_cost is not None and self.price is None:
            raise InputError(
                f"no price is known for model {self.spec.model!r}, so --max-cost "
                "cannot be enforced.",
                record="--max-cost",
                fix="pass --price IN,OUT (USD per million tokens; 0,0 for a local server).",
            )

    # -- cache -------------------------------------------------------------------------------
    def _request_body(self, messages: list[dict], max_tokens: int) -> dict:
        return {
            "provider": self.spec.provider,
            "model": self.spec.model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": None if self.spec.provider == "anthropic" else self.temperature,
        }

    def _cache_path(self, body: dict) -> Path:
        key = sha256_json({"cache_format": CACHE_FORMAT, **body})
        return self.cache_dir / key[:2] / f"{key}.json"

    def is_cached(self, messages: list[dict], max_tokens: int) -> bool:
        """Whether this exact request has a reply in the cache."""
        return self._cache_path(self._request_body(messages, max_tokens)).exists()

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        """USD for the tokens at the client's price (0 without a price)."""
        if self.price is None:
            return 0.0
        return (input_tokens * self.price[0] + output_tokens * self.price[1]) / 1e6

    def estimate(self, messages: list[dict], max_tokens: int) -> tuple[int, int]:
        """(input tokens, output tokens upper bound) of a call, before making it."""
        return sum(estimate_tokens(m["content"]) + 4 for m in messages), max_tokens

    # -- calls -------------------------------------------------------------------------------
    def complete(self, messages: list[dict], max_tokens: int) -> Reply:
        """The reply to ``messages``: from the cache, or asked (with retries) and cached.

        Raises BudgetExceeded when the call could take spending over ``max_cost`` (it is then
        not made), CallFailed after the retries, InputError for a rejected key or model."""
        body = self._request_body(messages, max_tokens)
        path = self._cache_path(body)
        with self._lock:
            self.usage.calls += 1
        hit = self._cached(path)
        if hit is not None:
            return hit
        est = self.cost(*self.estimate(messages, max_tokens))
        with self._lock:  # reserve the worst case so concurrent calls cannot overshoot together
            if (
                self.max_cost is not None
                and self.usage.cost_usd + self._reserved + est > self.max_cost
            ):
                raise BudgetExceeded(
                    f"spent ${self.usage.cost_usd:.4f}; the next call could cost "
                    f"up to ${est:.4f}, over --max-cost ${self.max_cost:.4f}"
                )
            self._reserved += est
        try:
            text, n_in, n_out = self._call_with_retries(messages, max_tokens)
        finally:
            with self._lock:
                self._reserved -= est
        if n_in is None:  # some local servers report no usage
            n_in, n_out = self.estimate(messages, 0)[0], estimate_tokens(text)
        cost = self.cost(n_in, n_out)
        with self._lock:
            self.usage.input_tokens += n_in
            self.usage.output_tokens += n_out
            self.usage.cost_usd += cost
        write_json(
            path,
            {**body, "text": text, "input_tokens": n_in, "output_tokens": n_out, "cost_usd": cost},
        )
        return Reply(text, n_in, n_out, cost, False)

    def _cached(self, path: Path) -> Reply | None:
        """The cached reply at ``path``, with the tokens and cost of the original call (so a
        re-run's tables are identical; this run's spending does not grow); None when absent."""
        if not path.exists():
            return None
        try:
            hit = read_json(path)
            reply = Reply(
                hit["text"],
                hit["input_tokens"],
                hit["output_tokens"],
                float(hit.get("cost_usd", 0.0)),
                True,
            )
        except (InputError, KeyError):
            log.warning("ignoring damaged cache entry %s", path)
            return None
        with self._lock:
            self.usage.cached += 1
        return reply

    def _call_with_retries(self, messages, max_tokens):
        sdk = self._ensure_client()
        last = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                with self._lock:
                    self.usage.retries += 1
            with self._lock:
                self.usage.requests += 1
            try:
                return self._call(messages, max_tokens)
            except sdk.APIStatusError as e:
                code = e.status_code
                if code in (401, 403):
                    raise InputError(
                        f"{self.spec.provider} rejected the API key (HTTP {code}).",
                        record=self.spec.name,
                        fix=f"check {self._key_env()} and the account's access.",
                    ) from None
                if code == 404:
                    raise InputError(
                        f"{self.spec.provider} does not know model {self.spec.model!r} (HTTP 404).",
                        record=self.spec.name,
                        fix="check the model name and --base-url.",
                    ) from None
                if not (code in (408, 409, 429) or code >= 500):
                    raise CallFailed(f"HTTP {code}: {_short(e)}") from None
                last = f"HTTP {code}: {_short(e)}"
                delay = _retry_after(e.response) if e.response is not None else None
            except sdk.APIConnectionError as e:  # includes timeouts
                last = f"{type(e).__name__}: {_short(e)}"
                delay = None
            if attempt == self.max_retries:
                break
            if delay is None:
                delay = self.retry_delay * 2**attempt * (0.5 + random.random() / 2)
            log.info("%s: %s; retrying in %.2f s", self.spec.name, last, min(delay, self.max_delay))
            time.sleep(min(delay, self.max_delay))
        raise CallFailed(f"gave up after {self.max_retries + 1} attempts; last error {last}")

    def _key_env(self) -> str:
        return "ANTHROPIC_API_KEY" if self.spec.provider == "anthropic" else "OPENAI_API_KEY"

    def _ensure_client(self):
        with self._lock:
            if self._client is not None:
                return self._sdk
            if self.spec.provider == "anthropic":
                import anthropic as sdk

                if not (
                    os.environ.get("ANTHROPIC_API_KEY") or os.environ.get("ANTHROPIC_AUTH_TOKEN")
                ):
                    raise InputError(
                        "ANTHROPIC_API_KEY is not set.",
                        record="--llm",
                        fix="export ANTHROPIC_API_KEY=... or use --llm offline.",
                    )
                # the SDK reads the key (and ANTHROPIC_BASE_URL) from the environment itself
                self._client = sdk.Anthropic(
                    base_url=self.base_url, max_retries=0, timeout=self.timeout
                )
            elif self.spec.provider == "openai":
                import openai as sdk

                base = self.base_url or os.environ.get("OPENAI_BASE_URL")
                kwargs = {}
                if not os.environ.get("OPENAI_API_KEY"):
                    if not base:
                        raise InputError(
                            "OPENAI_API_KEY is not set.",
                            record="--llm",
                            fix="export OPENAI_API_KEY=..., or pass --base-url for a "
                            "local server that needs no key.",
                        )
                    kwargs["api_key"] = (
                        "no-key"  # local servers (vLLM, llama.cpp, Ollama) ignore it
                    )
                self._client = sdk.OpenAI(
                    base_url=base, max_retries=0, timeout=self.timeout, **kwargs
                )
            else:  # pragma: no cover - offline never gets here
                raise RuntimeError(self.spec)
            self._sdk = sdk
            return sdk

    def _call(self, messages, max_tokens) -> tuple[str, int | None, int | None]:
        if self.spec.provider == "anthropic":
            r = self._client.messages.create(
                model=self.spec.model, max_tokens=max_tokens, messages=messages
            )
            text = "".join(
                getattr(b, "text", "") or ""
                for b in (r.content or [])
                if getattr(b, "type", "") == "text"
            )
            u = r.usage
            return text, getattr(u, "input_tokens", None), getattr(u, "output_tokens", None)
        r = self._client.chat.completions.create(
            model=self.spec.model,
            messages=messages,
            max_tokens=max_tokens,
            temperature=self.temperature,
        )
        text = (r.choices[0].message.content or "") if r.choices else ""
        u = r.usage
        if u is None:
            return text, None, None
        return text, u.prompt_tokens, u.completion_tokens


def _retry_after(response) -> float | None:
    """Seconds from a ``retry-after-ms`` or ``retry-after`` (seconds) header, if present."""
    h = response.headers
    for name, div in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        v = h.get(name)
        if v is not None:
            try:
                return max(0.0, float(v) / div)
            except ValueError:
                pass  # an HTTP date: fall back to the exponential backoff
    return None


def _short(e: Exception) -> str:
    return " ".join(str(e).split())[:200]
