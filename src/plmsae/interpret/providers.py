"""LLM providers for the explain stage: Anthropic and OpenAI-compatible servers (vLLM, llama.cpp,
Ollama) through their official SDKs, with an on-disk cache, a cost budget and a price table.

The client fits slow and shared servers as well as vendor APIs: replies are held to a JSON schema
where the provider can (``structured_output``: OpenAI ``response_format``, Anthropic tool use or
an assistant prefill; ``auto`` falls back when a server refuses), timeouts follow the expected
tokens, retries back off with jitter, the calls in flight halve on overload (429, 5xx, a full
context) and grow back on success, a reply cut at ``max_tokens`` is asked again with twice the
limit, and :meth:`LLMClient.interrupt` stops it from sending anything more.

Keys are read by the SDKs from the environment (``ANTHROPIC_API_KEY``, ``OPENAI_API_KEY``);
plmsae never reads them into its own variables, logs or files. The cache stores requests
(model, messages, parameters) and reply texts, never headers.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import math
import os
import random
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from plmsae._util import InputError, read_json, sha256_json, write_json
from plmsae.interpret.prompts import ReplyFormat

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

#: --structured-output values, and the modes ``auto`` tries in order: schema (OpenAI
#: response_format json_schema, Anthropic tool use), json (OpenAI json_object, Anthropic "{"
#: prefill), text (the prompt alone; replies parsed from text)
STRUCTURED_OUTPUT = ("auto", "schema", "json", "off")
AUTO_MODES = ("schema", "json", "text")
#: a reply cut at max_tokens is asked again with the limit doubled, up to this factor
LENGTH_GROWTH = 2
#: the derived timeout (no --timeout): base seconds plus the request's tokens at the speed of a
#: slow CPU server (prompt and generated tokens per second), times the calls in flight
TIMEOUT_BASE_S = 60.0
SLOW_PROMPT_TPS = 50.0
SLOW_OUTPUT_TPS = 5.0
_CONTEXT_RE = re.compile(
    r"context (size|length|window)|exceeds? the (available )?context|exceed_context|"
    r"maximum context|prompt is too long|too many tokens|n_ctx",
    re.I,
)
_STRUCTURED_RE = re.compile(
    r"response_format|json_schema|json_object|schema|grammar|tool|prefill|assistant message", re.I
)


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


def is_local_url(url: str | None) -> bool:
    """Whether ``url`` points at this machine or a private network (a local server: no bill)."""
    if not url:
        return False
    host = (urlparse(url if "//" in url else f"//{url}").hostname or "").lower()
    if host == "localhost" or host.endswith((".localhost", ".local", ".internal")):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return bool(host) and "." not in host  # a bare name: a container or LAN host
    return ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_unspecified


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
    """A call that failed after its retries (recorded for the feature; the run goes on).

    ``reason``: ``timeout``, ``context`` (the prompt does not fit the server's context even
    alone), ``http`` or ``connection``."""

    def __init__(self, message: str, reason: str = "http"):
        super().__init__(message)
        self.reason = reason


class Interrupted(Exception):
    """The client was interrupted (Ctrl-C): no request was sent."""


@dataclass
class Reply:
    """One completion: its text, the tokens and cost reported for it, whether from the cache,
    whether it was cut at the token limit, and the limit it was last asked with."""

    text: str
    input_tokens: int
    output_tokens: int
    cost_usd: float
    cached: bool
    truncated: bool = False
    max_tokens: int = 0


@dataclass
class Usage:
    """What a client has spent so far (cached replies cost nothing again)."""

    calls: int = 0  # completions asked for (cached or not)
    cached: int = 0  # served from llm_cache/
    requests: int = 0  # HTTP requests sent, retries and re-asks included
    retries: int = 0  # after a timeout, an overload (429/5xx/full context) or a lost connection
    reasks: int = 0  # malformed replies asked again (by the explainer)
    length_reasks: int = 0  # replies cut at max_tokens, asked again with twice the limit
    input_tokens: int = 0  # as reported by the provider, uncached calls only
    output_tokens: int = 0
    cost_usd: float = 0.0  # from reported usage and the price table

    def as_dict(self) -> dict:
        return {**self.__dict__, "cost_usd": round(self.cost_usd, 6)}


class Completer(Protocol):
    """What the explainer asks: an :class:`LLMClient`, or a :class:`ReplayClient` (--dry-run)."""

    spec: LLMSpec

    def complete(self, messages: list[dict], max_tokens: int, fmt: ReplyFormat) -> Reply: ...

    def count(self, name: str) -> None: ...


@dataclass(frozen=True)
class Ticket:
    """A slot held by one request: whether it runs alone, and the throttle's generation."""

    alone: bool
    generation: int


class Throttle:
    """At most ``limit`` calls in flight. An overload (429, 5xx, a full context, a timeout)
    halves the limit once per burst (the calls sent together fail together) and sets a ceiling
    just below the limit that failed; successes raise the limit by one after ``limit`` in a row,
    up to the ceiling, and past it (probing whether the server has room again) after ten times
    as many, up to ``maximum``."""

    PROBE = 10

    def __init__(self, maximum: int):
        self.maximum = self.limit = self.ceiling = max(1, maximum)
        self.in_flight = 0
        self.generation = 0  # counts decreases; a failure of an older burst changes nothing
        self._successes = 0
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def slot(self, stop: threading.Event) -> Iterator[Ticket]:
        """Hold one slot while the request runs; :class:`Interrupted` once ``stop`` is set."""
        with self._cond:
            while self.in_flight >= self.limit and not stop.is_set():
                self._cond.wait(0.1)
            if stop.is_set():
                raise Interrupted()
            self.in_flight += 1
            ticket = Ticket(self.limit == 1, self.generation)
        try:
            yield ticket
        finally:
            with self._cond:
                self.in_flight -= 1
                self._cond.notify_all()

    def overloaded(self, ticket: Ticket) -> None:
        with self._cond:
            self._successes = 0
            if ticket.generation != self.generation or self.limit == 1:
                return
            self.ceiling = max(1, self.limit - 1)
            self.limit = max(1, self.limit // 2)
            self.generation += 1
            log.info("server overloaded: at most %d call(s) in flight now", self.limit)

    def succeeded(self) -> None:
        with self._cond:
            self._successes += 1
            need = self.limit * (1 if self.limit < self.ceiling else self.PROBE)
            if self._successes >= need and self.limit < self.maximum:
                self.limit += 1
                self._successes = 0
                self._cond.notify_all()


@dataclass
class _Answer:
    text: str
    input_tokens: int | None
    output_tokens: int | None
    finish: str  # "length" when cut at max_tokens
    mode: str


@dataclass
class _Failure:
    kind: str  # overload | context | timeout | connection | downgrade
    text: str
    delay: float | None = None


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
    timeout: float | None = None  # per request (s); None: derived from the expected tokens
    temperature: float | None = (
        0.0  # OpenAI-compatible only: the Anthropic SDK 2.x has no sampling params
    )
    structured_output: str = "auto"
    concurrency: int = 4
    usage: Usage = field(default_factory=Usage)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._reserved = 0.0
        self._client: Any = None
        self._sdk: Any = None
        self.throttle = Throttle(self.concurrency)
        self.modes = {"auto": AUTO_MODES, "schema": ("schema",), "json": ("json",)}.get(
            self.structured_output, ("text",)
        )
        self._mode = 0  # index into self.modes: auto falls back when a server refuses a mode
        if self.max_cost is not None and self.price is None:
            raise InputError(
                f"no price is known for model {self.spec.model!r}, so --max-cost "
                "cannot be enforced.",
                record="--max-cost",
                fix="pass --price IN,OUT (USD per million tokens; 0,0 for a local server).",
            )

    @property
    def local(self) -> bool:
        """Whether the server is on this machine or a private network."""
        env = "ANTHROPIC_BASE_URL" if self.spec.provider == "anthropic" else "OPENAI_BASE_URL"
        return is_local_url(self.base_url or os.environ.get(env))

    @property
    def mode(self) -> str:
        """The structured-output mode requests use now (schema, json or text)."""
        return self.modes[self._mode]

    def interrupt(self) -> None:
        """Send nothing more: calls waiting for a slot or a retry raise :class:`Interrupted`."""
        self._stop.set()

    def count(self, name: str) -> None:
        """Add one to a :class:`Usage` counter (thread-safe)."""
        with self._lock:
            setattr(self.usage, name, getattr(self.usage, name) + 1)

    # -- cache -------------------------------------------------------------------------------
    def _request_body(self, messages: list[dict], max_tokens: int, fmt: ReplyFormat, mode: str):
        body = {
            "provider": self.spec.provider,
            "model": self.spec.model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": None if self.spec.provider == "anthropic" else self.temperature,
        }
        if mode != "text":
            body["structured_output"] = {"mode": mode, "name": fmt.name, "schema": fmt.schema}
        return body

    def _cache_path(self, body: dict) -> Path:
        key = sha256_json({"cache_format": CACHE_FORMAT, **body})
        return self.cache_dir / key[:2] / f"{key}.json"

    def cached_reply(self, messages: list[dict], max_tokens: int, fmt: ReplyFormat) -> Reply | None:
        """The cached reply to this request in any structured-output mode this client may use,
        with the tokens and cost of the original call; None when there is none."""
        for mode in self.modes:
            path = self._cache_path(self._request_body(messages, max_tokens, fmt, mode))
            if not path.exists():
                continue
            try:
                hit = read_json(path)
                return Reply(
                    hit["text"],
                    hit["input_tokens"],
                    hit["output_tokens"],
                    float(hit.get("cost_usd", 0.0)),
                    True,
                    hit.get("finish_reason") == "length",
                    int(hit.get("max_tokens_used", max_tokens)),
                )
            except (InputError, KeyError, TypeError, ValueError):
                log.warning("ignoring damaged cache entry %s", path)
        return None

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        """USD for the tokens at the client's price (0 without a price)."""
        if self.price is None:
            return 0.0
        return (input_tokens * self.price[0] + output_tokens * self.price[1]) / 1e6

    def estimate(self, messages: list[dict], max_tokens: int) -> tuple[int, int]:
        """(input tokens, output tokens upper bound) of a call, before making it."""
        return sum(estimate_tokens(m["content"]) + 4 for m in messages), max_tokens

    def request_timeout(self, messages: list[dict], max_tokens: int) -> float:
        """Seconds one request may take: --timeout, else 60 s plus its tokens at a slow CPU
        server's speed, times the calls in flight (a shared server serves them together)."""
        if self.timeout is not None:
            return self.timeout
        n_in = self.estimate(messages, 0)[0]
        own = n_in / SLOW_PROMPT_TPS + max_tokens / SLOW_OUTPUT_TPS
        return TIMEOUT_BASE_S + own * self.throttle.limit

    # -- calls -------------------------------------------------------------------------------
    def complete(self, messages: list[dict], max_tokens: int, fmt: ReplyFormat) -> Reply:
        """The reply to ``messages`` in format ``fmt``: from the cache, or asked (with retries;
        again with twice the limit when cut at ``max_tokens``) and cached.

        Raises BudgetExceeded when a call could take spending over ``max_cost`` (it is then not
        made), CallFailed after the retries, Interrupted after :meth:`interrupt`, InputError for
        a rejected key or model."""
        if self._stop.is_set():
            raise Interrupted()
        self.count("calls")
        hit = self.cached_reply(messages, max_tokens, fmt)
        if hit is not None:
            self.count("cached")
            return hit
        limit, n_in, n_out, cost = max_tokens, 0, 0, 0.0
        while True:
            answer = self._request(messages, limit, fmt)
            if answer.input_tokens is None:  # some local servers report no usage
                answer.input_tokens = self.estimate(messages, 0)[0]
                answer.output_tokens = estimate_tokens(answer.text)
            call_cost = self.cost(answer.input_tokens, answer.output_tokens or 0)
            n_in, n_out, cost = (
                n_in + answer.input_tokens,
                n_out + (answer.output_tokens or 0),
                cost + call_cost,
            )
            with self._lock:
                self.usage.input_tokens += answer.input_tokens
                self.usage.output_tokens += answer.output_tokens or 0
                self.usage.cost_usd += call_cost
            if answer.finish != "length" or limit >= max_tokens * LENGTH_GROWTH:
                break
            log.info(
                "%s: reply cut at %d tokens; asking again with %d", self.spec.name, limit, 2 * limit
            )
            self.count("length_reasks")
            limit *= 2
        truncated = answer.finish == "length"
        body = self._request_body(messages, max_tokens, fmt, answer.mode)
        write_json(
            self._cache_path(body),
            {
                **body,
                "text": answer.text,
                "input_tokens": n_in,
                "output_tokens": n_out,
                "cost_usd": cost,
                "finish_reason": answer.finish,
                "max_tokens_used": limit,
            },
        )
        return Reply(answer.text, n_in, n_out, cost, False, truncated, limit)

    @contextlib.contextmanager
    def _reserve(self, messages: list[dict], max_tokens: int) -> Iterator[None]:
        """Reserve the worst-case cost of one request so concurrent calls cannot overshoot
        --max-cost together."""
        est = self.cost(*self.estimate(messages, max_tokens))
        with self._lock:
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
            yield
        finally:
            with self._lock:
                self._reserved -= est

    def _request(self, messages: list[dict], max_tokens: int, fmt: ReplyFormat) -> _Answer:
        """One answer, with retries: jittered exponential backoff (or the server's retry-after),
        fewer calls in flight after an overload, a doubled derived timeout after a timeout."""
        sdk = self._ensure_client()
        attempt, stretch = 0, 1.0
        last = _Failure("none", "")
        while True:
            if self._stop.is_set():
                raise Interrupted()
            mode = self.mode
            with self._reserve(messages, max_tokens), self.throttle.slot(self._stop) as ticket:
                self.count("requests")
                timeout = self.request_timeout(messages, max_tokens) * stretch
                try:
                    answer = self._call(messages, max_tokens, fmt, mode, timeout)
                except (sdk.APIStatusError, sdk.APIConnectionError) as e:
                    last = self._classify(e, sdk, mode, ticket.alone)
                    if last.kind not in ("connection", "downgrade"):
                        self.throttle.overloaded(ticket)  # before another call takes the slot
                else:
                    self.throttle.succeeded()
                    return answer
            if last.kind == "downgrade":
                continue
            if last.kind == "timeout" and self.timeout is None:
                stretch *= 2
            if attempt >= self.max_retries:
                break
            attempt += 1
            self.count("retries")
            self._wait(last, attempt)
        reason = last.kind if last.kind in ("timeout", "context") else "http"
        raise CallFailed(
            f"gave up after {attempt + 1} attempts; last error {last.text}",
            "connection" if last.kind == "connection" else reason,
        )

    def _wait(self, failure: _Failure, attempt: int) -> None:
        """Sleep before retry ``attempt`` (1, 2, ...): the server's retry-after or the backoff,
        with jitter so that calls that failed together do not retry together."""
        base = self.retry_delay * 2 ** (attempt - 1)
        delay = failure.delay if failure.delay is not None else base
        delay = min(delay + random.uniform(0.0, base), self.max_delay)
        log.info("%s: %s; retrying in %.2f s", self.spec.name, failure.text, delay)
        if self._stop.wait(delay):
            raise Interrupted()

    def _classify(self, e: Exception, sdk: Any, mode: str, alone: bool) -> _Failure:
        """What a failed request means for the next one; raises when retrying cannot help."""
        if isinstance(e, sdk.APITimeoutError):
            return _Failure("timeout", f"timed out ({type(e).__name__})")
        if not isinstance(e, sdk.APIStatusError):
            return _Failure("connection", f"{type(e).__name__}: {_short(e)}")
        code, text = e.status_code, f"HTTP {e.status_code}: {_short(e)}"
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
        if _CONTEXT_RE.search(str(e)):
            if alone:  # it does not fit even with nothing else on the server
                raise CallFailed(text, "context") from None
            return _Failure("context", text)
        refused = code in (400, 422, 501) and mode != "text" and _STRUCTURED_RE.search(str(e))
        if refused and self._downgrade(mode, text):
            return _Failure("downgrade", text)
        if code in (408, 409, 429) or code >= 500:
            delay = _retry_after(e.response) if e.response is not None else None
            return _Failure("overload", text, delay)
        raise CallFailed(text, "http") from None

    def _downgrade(self, mode: str, text: str) -> bool:
        """Fall back to the next structured-output mode after ``mode`` was refused (once per
        mode, whichever call sees it first). False when there is none to fall back to."""
        with self._lock:
            if self.modes[self._mode] != mode:  # another call already fell back
                return True
            if self._mode + 1 >= len(self.modes):
                return False
            self._mode += 1
            new = self.modes[self._mode]
        log.warning(
            "%s refused structured output %r (%s); using %r from now on",
            self.spec.name,
            mode,
            text,
            new,
        )
        return True

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
                self._client = sdk.Anthropic(base_url=self.base_url, max_retries=0)
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
                self._client = sdk.OpenAI(base_url=base, max_retries=0, **kwargs)
            else:  # pragma: no cover - offline never gets here
                raise RuntimeError(self.spec)
            self._sdk = sdk
            return sdk

    def _call(
        self, messages: list[dict], max_tokens: int, fmt: ReplyFormat, mode: str, timeout: float
    ) -> _Answer:
        if self.spec.provider == "anthropic":
            return self._call_anthropic(messages, max_tokens, fmt, mode, timeout)
        kwargs: dict[str, Any] = {}
        if mode == "schema":
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": fmt.name, "strict": True, "schema": fmt.schema},
            }
        elif mode == "json":
            kwargs["response_format"] = {"type": "json_object"}
        r = self._client.chat.completions.create(
            model=self.spec.model,
            messages=messages,
            max_tokens=max_tokens,
            temperature=self.temperature,
            timeout=timeout,
            **kwargs,
        )
        choice = r.choices[0] if r.choices else None
        text = (choice.message.content or "") if choice is not None else ""
        finish = str(getattr(choice, "finish_reason", "") or "")
        u = r.usage
        if u is None:
            return _Answer(text, None, None, finish, mode)
        return _Answer(text, u.prompt_tokens, u.completion_tokens, finish, mode)

    def _call_anthropic(
        self, messages: list[dict], max_tokens: int, fmt: ReplyFormat, mode: str, timeout: float
    ) -> _Answer:
        kwargs: dict[str, Any] = {}
        prefix = ""
        if mode == "schema":  # a forced tool call whose input is the reply
            kwargs["tools"] = [
                {
                    "name": fmt.name,
                    "description": f"Record the {fmt.name}.",
                    "input_schema": fmt.schema,
                }
            ]
            kwargs["tool_choice"] = {"type": "tool", "name": fmt.name}
        elif mode == "json":  # the reply starts as a JSON object
            prefix = "{"
            messages = [*messages, {"role": "assistant", "content": prefix}]
        r = self._client.messages.create(
            model=self.spec.model,
            max_tokens=max_tokens,
            messages=messages,
            timeout=timeout,
            **kwargs,
        )
        blocks = r.content or []
        tool = [b for b in blocks if getattr(b, "type", "") == "tool_use"]
        if tool:
            text = json.dumps(tool[0].input)
        else:
            text = prefix + "".join(
                getattr(b, "text", "") or "" for b in blocks if getattr(b, "type", "") == "text"
            )
        finish = "length" if r.stop_reason == "max_tokens" else str(r.stop_reason or "")
        u = r.usage
        return _Answer(
            text, getattr(u, "input_tokens", None), getattr(u, "output_tokens", None), finish, mode
        )


class ReplayClient:
    """Stands in for an :class:`LLMClient` in --dry-run: answers from the cache, or with the
    format's example reply for a call that would be made, counting both in ``totals`` (new
    calls, cached calls, re-asks replayed, estimated tokens and cost of the new calls); calls
    nothing."""

    def __init__(self, client: LLMClient):
        self.client, self.spec = client, client.spec
        self.totals: dict[str, Any] = dict.fromkeys(
            ("calls", "cached_calls", "reasks_replayed", "input_tokens", "output_tokens"), 0
        )
        self.totals["cost_usd"] = 0.0

    def complete(self, messages: list[dict], max_tokens: int, fmt: ReplyFormat) -> Reply:
        t = self.totals
        hit = self.client.cached_reply(messages, max_tokens, fmt)
        if hit is not None:
            t["cached_calls"] += 1
            return hit
        n_in, n_out = self.client.estimate(messages, max_tokens)
        t["calls"] += 1
        t["input_tokens"] += n_in
        t["output_tokens"] += n_out
        t["cost_usd"] += self.client.cost(n_in, n_out)
        return Reply(fmt.example, n_in, n_out, 0.0, False, False, max_tokens)

    def count(self, name: str) -> None:
        if name == "reasks":
            self.totals["reasks_replayed"] += 1


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
