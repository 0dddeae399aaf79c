import io
import logging

from sparse_flops import logs


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bars_show_on_a_terminal_only(monkeypatch):
    monkeypatch.setattr("sys.stderr", io.StringIO())
    bar = logs.progress(range(3), desc="embedding")
    assert bar.disable and list(bar) == [0, 1, 2]
    terminal = FakeTerminal()
    monkeypatch.setattr("sys.stderr", terminal)
    bar = logs.progress(range(3), desc="embedding", file=terminal)
    assert not bar.disable and list(bar) == [0, 1, 2]
    assert "embedding" in terminal.getvalue()


def test_third_party_chatter_is_quiet_unless_verbose():
    logs.quiet_third_party()
    assert logging.getLogger("jax._src.xla_bridge").level == logging.WARNING
    logs.quiet_third_party(verbose=True)
    assert logging.getLogger("jax._src.xla_bridge").level == logging.DEBUG
    logs.quiet_third_party()


def test_tensorboard_tags_have_no_at_sign():
    assert logs.tensorboard_tag("eval/precision@10") == "eval/precision_at_10"
