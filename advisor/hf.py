"""The Hugging Face plumbing, in one leaf module: quiet mode for the HF libraries, the Hub settings read at call
time (endpoint, offline, timeout, cache folder), error translation into advisor's errors, token scrubbing, and
downloads whose retry waits are bounded.

It imports only `advisor.errors` and `advisor.textutil` (and huggingface_hub / transformers lazily), so the
sources, the engines and the fetcher can all use it without an import circle.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from advisor.errors import (
    AdvisorError,
    GatedModelError,
    HeaderError,
    ModelNotFoundError,
    NetworkError,
    RevisionNotFoundError,
)

DEFAULT_TIMEOUT_S = 10.0

# ---------------------------------------------------------------------------------------------------------------
# Settings, read at call time


def timeout() -> float:
    """Seconds each Hub request may take: ADVISOR_HUB_TIMEOUT, default 10."""
    try:
        value = float(os.environ.get("ADVISOR_HUB_TIMEOUT", DEFAULT_TIMEOUT_S))
    except ValueError:
        return DEFAULT_TIMEOUT_S
    return value if 0 < value < 86400 else DEFAULT_TIMEOUT_S


def endpoint() -> str:
    env = os.environ.get("HF_ENDPOINT")
    if env:
        return env.rstrip("/")
    from huggingface_hub import constants

    return constants.ENDPOINT.rstrip("/")


def offline() -> bool:
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        value = os.environ.get(name)
        if value is not None and value.strip():
            return value.strip().upper() in ("1", "ON", "YES", "TRUE")
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def hub_cache_dir() -> Path:
    """Where Hugging Face keeps downloaded models: HF_HUB_CACHE (or the older HUGGINGFACE_HUB_CACHE), HF_HOME/hub,
    else huggingface_hub's default; read from the environment at call time."""
    env = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if env:
        return Path(os.path.expandvars(env)).expanduser()
    home = os.environ.get("HF_HOME")
    if home:
        return Path(os.path.expandvars(home)).expanduser() / "hub"
    try:
        from huggingface_hub import constants

        return Path(constants.HF_HUB_CACHE)
    except Exception:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        return Path(base) / "huggingface" / "hub"


# ---------------------------------------------------------------------------------------------------------------
# Tokens never leave the process


def secrets(token: str | None) -> list[str]:
    """Every token huggingface_hub may send: the argument, HF_TOKEN, the saved login."""
    found = [token, os.environ.get("HF_TOKEN"), os.environ.get("HUGGING_FACE_HUB_TOKEN")]
    try:
        from huggingface_hub import get_token

        found.append(get_token())
    except Exception:
        pass
    return [s for s in found if s and len(s) >= 4]


def scrub(text: Any, token: str | None = None, limit: int = 160) -> str:
    """One line, no token, no control characters, bounded length: for reasons quoted inside advisor's messages."""
    from advisor.textutil import one_line

    line = " ".join(str(text).split())
    for secret in secrets(token):
        line = line.replace(secret, "***")
    return one_line(line, limit)


# ---------------------------------------------------------------------------------------------------------------
# Quiet mode

_quiet_lock = threading.RLock()
_quiet_depth = 0
_quiet_saved: dict[str, Any] = {}
_LOGGERS = ("bitsandbytes", "accelerate", "huggingface_hub", "transformers", "llama_cpp")


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence the HF libraries' chatter (log lines, warnings, progress bars, stray prints to stderr) while the
    block runs. Nests, and is safe from several threads: the first entry saves the state, the last exit puts
    back exactly what was there (progress bars the user disabled stay disabled)."""
    global _quiet_depth
    with _quiet_lock:
        if _quiet_depth == 0:
            _quiet_saved.clear()
            _quiet_saved["stderr"] = sys.stderr
            _quiet_saved["loggers"] = {name: logging.getLogger(name).level for name in _LOGGERS}
            for name in _LOGGERS:
                logging.getLogger(name).setLevel(logging.ERROR)
            _silence_libraries(_quiet_saved)
            sys.stderr = io.StringIO()
        _quiet_depth += 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        with _quiet_lock:
            _quiet_depth -= 1
            if _quiet_depth == 0:
                sys.stderr = _quiet_saved.get("stderr", sys.__stderr__)
                for name, level in _quiet_saved.get("loggers", {}).items():
                    logging.getLogger(name).setLevel(level)
                _restore_libraries(_quiet_saved)


def _silence_libraries(saved: dict[str, Any]) -> None:
    """transformers (if loaded) and huggingface_hub keep their own verbosity and progress-bar switches (and
    transformers' switch flips huggingface_hub's too: read that one first)."""
    with contextlib.suppress(Exception):
        from huggingface_hub.utils import are_progress_bars_disabled

        saved["hub_bars_disabled"] = are_progress_bars_disabled()
    if "transformers" in sys.modules:
        with contextlib.suppress(Exception):
            from transformers.utils import logging as hf_logging

            saved["tf_verbosity"] = hf_logging.get_verbosity()
            saved["tf_bars"] = hf_logging.is_progress_bar_enabled()
            hf_logging.set_verbosity_error()
            hf_logging.disable_progress_bar()
    with contextlib.suppress(Exception):
        from huggingface_hub.utils import disable_progress_bars

        if saved.get("hub_bars_disabled") is False:
            disable_progress_bars()


def _restore_libraries(saved: dict[str, Any]) -> None:
    with contextlib.suppress(Exception):
        if "tf_verbosity" in saved:
            from transformers.utils import logging as hf_logging

            hf_logging.set_verbosity(saved["tf_verbosity"])
            if saved.get("tf_bars"):
                hf_logging.enable_progress_bar()  # (this turns huggingface_hub's bars on too: set just below)
    with contextlib.suppress(Exception):
        from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

        with warnings.catch_warnings():  # HF_HUB_DISABLE_PROGRESS_BARS set meanwhile: nothing to say
            warnings.simplefilter("ignore")
            if saved.get("hub_bars_disabled") is False:
                enable_progress_bars()
            elif saved.get("hub_bars_disabled") is True:
                disable_progress_bars()


# ---------------------------------------------------------------------------------------------------------------
# Error mapping


class Unreachable(Exception):
    """The Hub could not answer (connection, timeout, offline, 5xx, 429): fall back to caches."""

    def __init__(self, reason: str, hint: str = "check the connection or HF_ENDPOINT, or use a catalog model") -> None:
        super().__init__(reason)
        self.hint = hint


def translate(exc: BaseException, repo_id: str, revision: str | None, token: str | None) -> Exception:
    """A huggingface_hub / httpx error -> an advisor error (or `Unreachable`, for the cache fallbacks)."""
    import httpx2
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        SafetensorsParsingError,
    )
    from huggingface_hub.errors import RevisionNotFoundError as HfRevisionNotFoundError

    from advisor.textutil import safe

    if isinstance(exc, (AdvisorError, Unreachable)):
        return exc
    repo = safe(repo_id, 120)
    has_token = bool(secrets(token))
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(exc, GatedRepoError):
        if has_token and status == 403:
            return GatedModelError(
                f"Model '{repo}' is gated and the token in use has no access: accept its licence on its Hub page "
                "with that account, or set HF_TOKEN to a token that has."
            )
        return GatedModelError(
            f"Model '{repo}' is gated or private: set HF_TOKEN after accepting its licence on its Hub page."
        )
    if isinstance(exc, HfRevisionNotFoundError):
        return RevisionNotFoundError(
            f"Model '{repo}' has no revision '{safe(revision or 'main', 80)}' on the Hub: give an existing branch, "
            "tag or commit, or omit the revision."
        )
    if isinstance(exc, RemoteEntryNotFoundError):
        return ModelNotFoundError(
            f"A file of '{repo}' listed by the Hub is missing ({scrub(exc, token, 100)}): try again later, "
            "or give a local folder or a catalog name."
        )
    if isinstance(exc, RepositoryNotFoundError) and status != 401:
        return ModelNotFoundError(
            f"No model '{repo}' on the Hub: check the id (namespace/name), or give a local folder or a catalog name."
        )
    if isinstance(exc, HfHubHTTPError) and status in (401, 403):
        if status == 401 and has_token:
            return GatedModelError(
                f"The Hub refused the token for '{repo}' (401): check that HF_TOKEN holds a valid read token."
            )
        if status == 401:
            return GatedModelError(
                f"Model '{repo}' is gated or private, or does not exist (401): check the id, or set HF_TOKEN "
                "after accepting its licence on its Hub page."
            )
        return GatedModelError(
            f"Model '{repo}' is gated or private and access was refused (403): accept its licence on its Hub "
            "page, or set HF_TOKEN to a token with read access."
        )
    if isinstance(exc, HfHubHTTPError) and status == 404:
        return ModelNotFoundError(
            f"No model '{repo}' on the Hub (404): check the id (namespace/name), or give a local folder or a "
            "catalog name."
        )
    if isinstance(exc, HfHubHTTPError) and status == 429:
        return Unreachable(
            f"the Hub is rate-limiting requests (429{retry_after(exc)})",
            "wait and try again; requests with HF_TOKEN set get a higher limit",
        )
    if isinstance(exc, HfHubHTTPError) and status is not None and (status >= 500 or status == 408):
        return Unreachable(f"the Hub answered {status}", "try again later, or use a catalog model")
    if isinstance(exc, SafetensorsParsingError):
        return HeaderError(f"{scrub(exc, token, 300)} Re-upload or re-download the file, or use a catalog name.")
    if isinstance(exc, HFValidationError):
        return ModelNotFoundError(
            f"'{repo}' is not a valid Hub id ({scrub(exc, token, 100)}): use namespace/name, a local folder "
            "or a catalog name."
        )
    if isinstance(exc, OfflineModeIsEnabled):
        return Unreachable("HF_HUB_OFFLINE is set")
    if isinstance(exc, httpx2.TimeoutException):
        return Unreachable(f"no answer within {timeout():g}s")
    if isinstance(exc, (httpx2.TransportError, ConnectionError, TimeoutError, LocalEntryNotFoundError)):
        return Unreachable(scrub(f"{type(exc).__name__}: {exc}", token, 120))
    if isinstance(exc, HfHubHTTPError):
        return NetworkError(
            f"The Hub answered {status} for '{repo}' ({scrub(exc, token, 100)}): try again later, or use a "
            "catalog name."
        )
    if isinstance(exc, OSError) and "Consistency check failed" in str(exc):
        return Unreachable("a download was cut short")
    if isinstance(exc, Exception) and raised_by_hub_client(exc):  # an answer huggingface_hub could not parse
        return Unreachable(
            f"its answer could not be read: {scrub(f'{type(exc).__name__}: {exc}', token, 100)}",
            "try again later, or give a local folder or a catalog name",
        )
    return exc if isinstance(exc, Exception) else RuntimeError(str(exc))


def raised_by_hub_client(exc: BaseException) -> bool:
    """Whether `exc` was raised inside a call into huggingface_hub or httpx (parsing the Hub's answer), as opposed
    to in advisor's own code: some frame of its traceback lies in those packages."""
    tb = exc.__traceback__
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename.replace("\\", "/")
        if "/huggingface_hub/" in filename or "/httpx" in filename:
            return True
        tb = tb.tb_next
    return False


def retry_after(exc: BaseException) -> str:
    """', retry after 30 s' from a 429's Retry-After header (seconds, or an HTTP date), else ''."""
    headers = getattr(getattr(exc, "response", None), "headers", None) or {}
    try:
        value = str(headers.get("retry-after") or "").strip()
    except Exception:
        return ""
    if value.isdigit() and len(value) < 10:
        return f", retry after {int(value):,} s"
    return f", retry after {scrub(value, None, 40)}" if value else ""


# ---------------------------------------------------------------------------------------------------------------
# Downloads with bounded retry waits

# Longest wait advisor lets huggingface_hub's download retries sleep (a 429's Retry-After can say an hour).
MAX_RETRY_WAIT_S = 30.0


class RateLimited(Exception):
    def __init__(self, seconds: float) -> None:
        super().__init__(f"asked to wait {seconds:g} s")
        self.seconds = seconds


_guard_lock = threading.Lock()
_guard_depth = 0
_guard_limit = MAX_RETRY_WAIT_S
_guard_real: Any = None


class _GuardedClock:
    """Stands in for the `time` module inside huggingface_hub's HTTP helpers while a guarded download runs: a
    retry wait longer than the limit raises RateLimited instead of sleeping; everything else is `time`'s."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def sleep(self, seconds: float) -> None:
        if seconds > _guard_limit:
            raise RateLimited(seconds)
        self._real.sleep(seconds)


def retry_sleep_hook() -> tuple[Any, str] | None:
    """(module, attribute) where huggingface_hub's download retries look up `time.sleep`, or None when this version
    no longer sleeps there (then waits are not bounded: `tests/test_hf.py` fails loudly on that)."""
    try:
        import inspect

        from huggingface_hub.utils import _http
    except ImportError:
        return None
    real = getattr(_http, "time", None)
    backoff = getattr(_http, "_http_backoff_base", None)
    if real is None or not callable(getattr(real, "sleep", None)) or backoff is None:
        return None
    try:
        if "time.sleep(" not in inspect.getsource(backoff):
            return None
    except (OSError, TypeError):
        return None
    return _http, "time"


@contextlib.contextmanager
def bounded_retry_waits(limit: float = MAX_RETRY_WAIT_S) -> Iterator[None]:
    """Let huggingface_hub's download retries wait at most `limit` seconds at a time while the block runs.

    Its file downloads retry a 429 after sleeping the Retry-After the server sent, five times over (an hour's
    Retry-After would hang `bench` for five), and it has no setting for that. While any guarded download runs,
    the `time` its HTTP helpers sleep with is a clock that raises RateLimited instead of sleeping longer (other
    threads' huggingface_hub calls see the same bound meanwhile). Guards nest and run from several threads: the
    real module goes back when the last one ends.
    """
    global _guard_depth, _guard_limit, _guard_real
    hook = retry_sleep_hook()
    if hook is None:
        yield
        return
    module, attr = hook
    with _guard_lock:
        if _guard_depth == 0:
            _guard_real = getattr(module, attr)
            _guard_limit = limit
            setattr(module, attr, _GuardedClock(_guard_real))
        else:
            _guard_limit = min(_guard_limit, limit)
        _guard_depth += 1
    try:
        yield
    finally:
        with _guard_lock:
            _guard_depth -= 1
            if _guard_depth == 0:
                setattr(module, attr, _guard_real)
                _guard_limit = MAX_RETRY_WAIT_S


def download_error(exc: BaseException, repo_id: str, revision: str | None, what: str) -> AdvisorError:
    """The one-line error for a failed download of `what` from `repo_id` (a snapshot or one file)."""
    from huggingface_hub.errors import LocalEntryNotFoundError

    from advisor.textutil import safe

    if isinstance(exc, RateLimited):
        return NetworkError(
            f"Cannot download {what} of '{safe(repo_id, 120)}': the Hub is rate-limiting downloads (429, retry after "
            f"{exc.seconds:,.0f} s): wait and try again; requests with HF_TOKEN set get a higher limit."
        )
    # No answer and no cached copy: huggingface_hub wraps the connection error; name that instead.
    uncached = isinstance(exc, LocalEntryNotFoundError) and exc.__cause__ is not None
    err = translate(exc.__cause__ if uncached else exc, repo_id, revision, os.environ.get("HF_TOKEN"))
    if isinstance(err, AdvisorError):
        return err
    where = " and no copy is in the local cache" if uncached else ""
    return NetworkError(
        f"Cannot download {what} of '{safe(repo_id, 120)}': the Hub cannot be reached ({scrub(err)}){where}: check "
        "the network or HF_ENDPOINT, or give a local model folder."
    )
