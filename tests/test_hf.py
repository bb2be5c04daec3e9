"""advisor.hf: quiet mode that nests and is safe from threads, the settings read at call time."""

from __future__ import annotations

import logging
import sys
import threading

from advisor import hf


def test_quiet_nests_and_restores_what_was_there(monkeypatch):
    import importlib

    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    hub_tqdm = importlib.import_module("huggingface_hub.utils.tqdm")

    # An earlier import may have read HF_HUB_DISABLE_PROGRESS_BARS=1 (the stand-in Hub's fixture sets it).
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    monkeypatch.setattr(hub_tqdm, "HF_HUB_DISABLE_PROGRESS_BARS", None)
    enable_progress_bars()
    stderr = sys.stderr
    level = logging.getLogger("huggingface_hub").level
    with hf.quiet():
        with hf.quiet():
            assert are_progress_bars_disabled()
        assert are_progress_bars_disabled() and sys.stderr is not stderr  # the inner exit undid nothing
    assert not are_progress_bars_disabled() and sys.stderr is stderr
    assert logging.getLogger("huggingface_hub").level == level
    disable_progress_bars()  # a user who turned them off keeps them off
    with hf.quiet():
        pass
    assert are_progress_bars_disabled()
    enable_progress_bars()


def test_quiet_from_two_threads_puts_back_stderr_once_both_leave():
    stderr = sys.stderr
    inside = threading.Barrier(2)
    leave_first = threading.Event()

    def first():
        with hf.quiet():
            inside.wait()
        leave_first.set()

    def second():
        with hf.quiet():
            inside.wait()
            leave_first.wait()
            assert sys.stderr is not stderr  # the other thread's exit did not unmute this one

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sys.stderr is stderr


def test_settings_are_read_at_call_time(monkeypatch):
    monkeypatch.setenv("ADVISOR_HUB_TIMEOUT", "2.5")
    assert hf.timeout() == 2.5
    monkeypatch.setenv("ADVISOR_HUB_TIMEOUT", "nonsense")
    assert hf.timeout() == hf.DEFAULT_TIMEOUT_S
    monkeypatch.setenv("ADVISOR_HUB_TIMEOUT", "-1")
    assert hf.timeout() == hf.DEFAULT_TIMEOUT_S
    monkeypatch.setenv("HF_HUB_CACHE", "/tmp/somewhere/hub")
    assert str(hf.hub_cache_dir()) == "/tmp/somewhere/hub"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hf.offline()


def test_tokens_are_scrubbed_from_messages(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_SecretToken1234")
    assert "hf_SecretToken1234" not in hf.scrub("401 for hf_SecretToken1234 \x1b[2J")
    assert "\x1b" not in hf.scrub("x\x1b]0;t\x07y")
