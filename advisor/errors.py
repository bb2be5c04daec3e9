"""One hierarchy of user-facing errors; `cli.main()` turns them into one line and an exit code."""

from __future__ import annotations


class AdvisorError(Exception):
    """An error the user can act on. The message names the input and the next step."""

    exit_code = 1


class UsageError(AdvisorError):
    """Bad arguments or options."""

    exit_code = 2


class NameParseError(AdvisorError):
    """A size label such as '8x7B' that cannot be read."""

    exit_code = 2


class ModelNotFoundError(AdvisorError):
    """No model of that id in the catalog, on the Hub, or on disk."""


class RevisionNotFoundError(AdvisorError):
    """The repo exists but not at that revision."""


class GatedModelError(AdvisorError):
    """401/403 from the Hub: gated or private."""


class NetworkError(AdvisorError):
    """The Hub cannot be reached (offline, timeout, refused)."""


class ConfigError(AdvisorError):
    """A config.json that is not valid JSON or lacks the fields a spec needs."""


class UnsupportedArchitectureError(AdvisorError):
    """transformers does not know the architecture, or it needs remote code."""


class HeaderError(AdvisorError):
    """A safetensors or GGUF header that is truncated, corrupt or absurd."""


class DeviceNotFoundError(AdvisorError):
    """A --device name not in the accelerator table."""

    exit_code = 2


class HardwareProbeError(AdvisorError):
    """A hardware probe failed in a way that leaves no usable figure."""


class RuntimeLoadError(AdvisorError):
    """Loading or running a model failed (missing package, out of memory, unsupported precision)."""
