"""The `openai` narrator: any OpenAI-compatible chat-completions endpoint (vLLM, the llama.cpp
server, hosted APIs) over plain HTTP, with the standard library only.

`OpenAINarrator(base_url, model, api_key_env='OPENAI_API_KEY', ...)` POSTs
`{base_url}/chat/completions` with `{'model', 'messages', 'temperature', 'max_tokens'}`, the
messages from `prompt.build_prompt`, and returns the first choice's message content.

- Key: read from the environment variable `api_key_env` at every call and sent as
  `Authorization: Bearer ...`; no header when the variable is unset (local servers need
  none). The key is never stored on the narrator, logged, or put in an exception or repr; an
  error body that echoes it is redacted.
- Timeouts: `timeout` seconds per socket operation (connect, each read).
- Retries: up to `max_retries` more tries on connection errors, timeouts and HTTP 408, 429,
  500, 502, 503 and 504, waiting `backoff * 2**retry` seconds with jitter (between half and
  all of it, at most MAX_RETRY_WAIT), or the server's `Retry-After` on 429/503. Other HTTP
  errors, redirects (which would resend the key) and malformed responses fail at once.
  Failures raise `NarratorError` with the HTTP status and reason; the narrator knows no clip
  ids, so the caller adds the clip.
- Concurrency: at most `max_concurrency` requests in flight per narrator, whichever threads
  call it. `narrate_many(requests)` narrates a batch on a thread pool of that size and
  returns, in order, the narration or the exception of each request; the pipeline narrates
  its clips in batches through it (via `ValidatedNarrator.narrate_checked_many`).
- Rate limit: `requests_per_second` (None = unlimited) spaces request starts, retries
  included, across all threads.
"""
from __future__ import annotations

import concurrent.futures
import email.utils
import http.client
import json
import logging
import os
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence

from egovideo_jax.hod.motion import MotionFacts
from egovideo_jax.hod.narrators import register_narrator
from egovideo_jax.hod.prompt import build_prompt
from egovideo_jax.hod.tracks import Tracks

logger = logging.getLogger(__name__)

RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
RETRY_AFTER_STATUSES = frozenset({429, 503})
MAX_RETRY_WAIT = 60.0  # seconds; a huge Retry-After should fail the clip, not stall the run
_ERROR_BODY_CHARS = 300

_sleep = time.sleep  # tests patch this, not time.sleep, to keep their servers' clocks real


class NarratorError(RuntimeError):
    """A narrator request that failed for good; `status` is the HTTP status (None when no
    response came back), `retryable` whether it was a transient failure."""

    def __init__(self, message: str, status: int | None = None, retryable: bool = False):
        super().__init__(message)
        self.status = status
        self.retryable = retryable


class _RetryableError(NarratorError):
    def __init__(self, message: str, status: int | None = None,
                 retry_after: float | None = None):
        super().__init__(message, status, retryable=True)
        self.retry_after = retry_after


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A followed redirect would resend the key to wherever it points: fail instead."""

    def redirect_request(self, *args, **kwargs):
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


class _RateLimiter:
    """Spaces request starts `1 / requests_per_second` apart across threads."""

    def __init__(self, requests_per_second: float):
        if requests_per_second <= 0:
            raise ValueError(f'requests_per_second: expected > 0, got {requests_per_second}')
        self.interval = 1.0 / requests_per_second
        self.next_start = 0.0
        self.lock = threading.Lock()

    def wait(self):
        with self.lock:
            now = time.monotonic()
            start = max(now, self.next_start)
            self.next_start = start + self.interval
        if start > now:
            _sleep(start - now)


@register_narrator('openai')
class OpenAINarrator:
    name = 'openai'

    def __init__(self, base_url: str, model: str, api_key_env: str | None = 'OPENAI_API_KEY',
                 timeout: float = 30.0, max_retries: int = 3, backoff: float = 1.0,
                 temperature: float = 0.2, max_tokens: int = 200, max_concurrency: int = 4,
                 requests_per_second: float | None = None):
        if max_concurrency < 1:
            raise ValueError(f'max_concurrency: expected at least 1, got {max_concurrency}')
        if max_retries < 0:
            raise ValueError(f'max_retries: expected at least 0, got {max_retries}')
        self.base_url = base_url.rstrip('/')
        self.model = model
        self.api_key_env = api_key_env
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.max_concurrency = max_concurrency
        self.requests_per_second = requests_per_second
        self._slots = threading.BoundedSemaphore(max_concurrency)
        self._rate_limiter = (_RateLimiter(requests_per_second)
                              if requests_per_second is not None else None)

    def __repr__(self) -> str:
        return (f'OpenAINarrator(base_url={self.base_url!r}, model={self.model!r}, '
                f'api_key_env={self.api_key_env!r})')

    @property
    def url(self) -> str:
        return f'{self.base_url}/chat/completions'

    def narrate(self, narration: str, tracks: Tracks, facts: MotionFacts) -> str:
        messages = build_prompt(narration, tracks, facts, facts.clip_times)
        return self.complete(messages)

    def narrate_many(self, requests: Iterable[tuple[str, Tracks, MotionFacts]]
                     ) -> list[str | Exception]:
        """`narrate` for each `(narration, tracks, facts)`, `max_concurrency` at a time; each
        entry is the narration or the exception its request raised."""
        requests = list(requests)
        if not requests:
            return []
        workers = min(self.max_concurrency, len(requests))
        with concurrent.futures.ThreadPoolExecutor(workers, 'openai-narrator') as pool:
            futures = [pool.submit(self.narrate, *request) for request in requests]
            return [future.exception() or future.result() for future in futures]

    def complete(self, messages: Sequence[dict]) -> str:
        """The content of the first choice for these chat messages, after retries."""
        body = json.dumps({'model': self.model, 'messages': list(messages),
                           'temperature': self.temperature,
                           'max_tokens': self.max_tokens}).encode()
        retry = 0
        while True:
            try:
                return self._post(body)
            except _RetryableError as error:
                if retry == self.max_retries:
                    raise NarratorError(f'{error} (gave up after {retry + 1} tries)',
                                        error.status, retryable=True) from None
                delay = self._retry_delay(retry, error.retry_after)
                retry += 1
                logger.warning('%s; retry %d of %d in %.1f s', error, retry, self.max_retries,
                               delay)
                _sleep(delay)

    def _retry_delay(self, retry: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, MAX_RETRY_WAIT)
        delay = min(self.backoff * 2 ** retry, MAX_RETRY_WAIT)
        return delay / 2 + random.uniform(0, delay / 2)

    def _post(self, body: bytes) -> str:
        # Read at call time, kept in locals only, so nothing on self or in a repr holds it.
        api_key = os.environ.get(self.api_key_env) if self.api_key_env else None
        headers = {'Content-Type': 'application/json', 'Accept': 'application/json'}
        if api_key:
            headers['Authorization'] = f'Bearer {api_key}'
        request = urllib.request.Request(self.url, data=body, headers=headers, method='POST')
        if self._rate_limiter is not None:
            self._rate_limiter.wait()
        with self._slots:
            try:
                with _OPENER.open(request, timeout=self.timeout) as response:
                    return _content(response.read(), api_key)
            except urllib.error.HTTPError as error:
                raise _http_error(error, api_key) from None
            except TimeoutError:
                raise _RetryableError(f'POST {self.url}: timed out after {self.timeout} s'
                                      ) from None
            except urllib.error.URLError as error:
                reason = ('timed out' if isinstance(error.reason, TimeoutError)
                          else str(error.reason))
                raise _RetryableError(f'POST {self.url}: {reason}') from None
            except (OSError, http.client.HTTPException) as error:
                raise _RetryableError(f'POST {self.url}: {type(error).__name__}: {error}'
                                      ) from None


def _http_error(error: urllib.error.HTTPError, api_key: str | None) -> NarratorError:
    try:
        detail = error.read(_ERROR_BODY_CHARS).decode('utf-8', 'replace').strip()
    except (OSError, http.client.HTTPException):
        detail = ''
    detail = _redacted(detail, api_key)
    message = f'POST {error.url}: HTTP {error.code} {error.reason}'
    if detail:
        message += f': {detail}'
    if error.code not in RETRYABLE_STATUSES:
        return NarratorError(message, error.code)
    retry_after = (_retry_after_seconds(error.headers.get('Retry-After'))
                   if error.code in RETRY_AFTER_STATUSES else None)
    return _RetryableError(message, error.code, retry_after)


def _retry_after_seconds(value: str | None) -> float | None:
    """`Retry-After` as seconds from now: either delay-seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _content(body: bytes, api_key: str | None) -> str:
    try:
        content = json.loads(body)['choices'][0]['message']['content']
    except (ValueError, KeyError, IndexError, TypeError) as error:
        detail = _redacted(repr(body[:_ERROR_BODY_CHARS]), api_key)
        raise NarratorError(f'malformed chat-completions response ({type(error).__name__}): '
                            f'{detail}') from None
    return (content or '').strip()


def _redacted(text: str, api_key: str | None) -> str:
    """`text` without the key: some servers echo the request back in their answers."""
    return text.replace(api_key, '[redacted]') if api_key else text
