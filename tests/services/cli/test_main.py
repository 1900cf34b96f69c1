"""`brl` as a shell command: a reader that goes away (`brl ... | head`) ends it quietly."""

import subprocess
import sys


def test_a_closed_stdout_ends_quietly_without_a_traceback() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli.main", "cluster", "show", "3cluster24"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    # Close our end before the child has imported anything: its first print meets a broken pipe.
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141
    assert "Traceback" not in err and "BrokenPipeError" not in err
