"""FEWSHOT_NICE: the training panel's child runs below the window's priority."""
import os
import subprocess
import sys

import pytest


@pytest.mark.skipif(not hasattr(os, "getpriority"), reason="nice values are POSIX")
def test_the_nice_variable_lowers_the_process_priority():
    code = ("import os; from engine.cli import lower_priority_from_env; before = os.getpriority(os.PRIO_PROCESS, 0); "
            "lower_priority_from_env(); print(os.getpriority(os.PRIO_PROCESS, 0) - before)")
    env = dict(os.environ, FEWSHOT_NICE="7")
    raised = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert int(raised.stdout) == min(7, 19 - os.getpriority(os.PRIO_PROCESS, 0))
    env["FEWSHOT_NICE"] = "not a number"  # ignored, never an error
    same = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert int(same.stdout) == 0
