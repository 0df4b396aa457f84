"""The event stream a training child writes (engine/training/events.py), the way the
training panel reads it: versioned lines, a stop line on stdin, an error event."""
import json
import subprocess
import sys

from engine.training.events import SCHEMA_VERSION, read_events


def child(omniglot_root, out, *extra):
    cmd = [sys.executable, "-m", "engine.cli", "train", "--dataset", "omniglot", "--data-root", str(omniglot_root),
           "--split", "small1", "--way", "5", "--shot", "1", "--query", "2", "--device", "cpu",
           "--out", str(out), "--events", "-", *extra]
    return subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_stop_line_on_stdin_stops_the_run_with_a_checkpoint(omniglot_root, tmp_path):
    proc = child(omniglot_root, tmp_path / "run", "--episodes", "100000", "--log-every", "1")
    seen = []
    for line in proc.stdout:
        seen.append(json.loads(line))
        if seen[-1]["event"] == "episode" and seen[-1]["episode"] >= 3:
            proc.stdin.write("stop\n")
            proc.stdin.flush()
            break
    rest, err = proc.communicate(timeout=120)
    seen += [json.loads(line) for line in rest.splitlines()]
    assert proc.returncode == 130, err[-2000:]
    assert all(e["schema"] == SCHEMA_VERSION for e in seen)
    last = seen[-1]
    assert last["event"] == "stopped" and 3 <= last["episode"] < 100
    step = next(e for e in seen if e["event"] == "episode")
    assert {"loss", "acc", "lr", "episodes_per_s", "eta_s", "wait_fraction"} <= set(step)
    assert 0.0 <= step["wait_fraction"] <= 1.0
    # The run folder keeps the same events for drawing its curves later, and resumes from where it stopped.
    assert [e["event"] for e in read_events(tmp_path / "run")] == [e["event"] for e in seen]
    assert (tmp_path / "run" / "resume.pt").is_file()


def test_end_of_stdin_is_not_a_stop(omniglot_root, tmp_path):
    proc = child(omniglot_root, tmp_path / "run", "--episodes", "3")
    out, err = proc.communicate(input="", timeout=120)  # stdin closed at once
    assert proc.returncode == 0, err[-2000:]
    assert json.loads(out.splitlines()[-1])["event"] == "done"


def test_a_user_error_is_an_error_event_and_one_error_line(tmp_path):
    (tmp_path / "data").mkdir()
    proc = child(tmp_path / "data", tmp_path / "run", "--episodes", "3")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    event = json.loads(out.splitlines()[-1])
    assert event["event"] == "error" and event["schema"] == SCHEMA_VERSION and "omniglot" in event["message"].lower()
    assert err.strip().count("\n") == 0 and err.startswith("error:") and "Traceback" not in err


def test_a_line_cut_by_a_kill_is_skipped_on_reading(tmp_path):
    (tmp_path / "events.jsonl").write_text(json.dumps({"schema": SCHEMA_VERSION, "event": "start"}) + "\n"
                                           + '{"schema": 1, "event": "epis')
    assert [e["event"] for e in read_events(tmp_path)] == ["start"]
