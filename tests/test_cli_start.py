"""The command's first seconds: usage errors name the program once, and a Ctrl-C while the heavy modules
(torch, gymnasium) are still importing is one line and exit 130, not a KeyboardInterrupt traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from asyncdqn.cli import main


def test_a_subcommand_usage_error_names_the_program_once_and_the_subcommand(capsys):
    assert main(["train", "--seed", "x"]) == 2
    assert capsys.readouterr().err == "asyncdqn: error: train: argument --seed: invalid int value: 'x'\n"
    assert main(["frobnicate"]) == 2
    assert capsys.readouterr().err.startswith("asyncdqn: error: argument COMMAND: invalid choice: 'frobnicate'")


def test_importing_the_command_line_imports_no_torch_nor_numpy():
    # what makes the import window short: the console script imports asyncdqn.cli before main's handler runs
    code = "import sys, asyncdqn.cli; print(sorted(m for m in ('torch', 'gymnasium', 'pandas', 'numpy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("delay_s", [0.3, 0.8, 1.5])
def test_ctrl_c_at_any_moment_of_start_up_is_one_line(tmp_path, delay_s):
    code = "import sys; from asyncdqn.cli import main; sys.exit(main())"
    proc = subprocess.Popen([sys.executable, "-c", code, "train", "cartpole", "--out", str(tmp_path / "run"),
                             "--quiet"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})
    time.sleep(delay_s)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=100)
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert proc.returncode == 130, (proc.returncode, err)
    assert len(err.strip().splitlines()) >= 1 and all(line.startswith("asyncdqn: ") for line in err.splitlines())


def _subparsers():
    import argparse

    from asyncdqn.cli import _parser

    root = _parser()
    (sub,) = [a for a in root._actions if isinstance(a, argparse._SubParsersAction)]
    return root, sub.choices


def test_every_command_and_option_has_help_and_each_command_ends_with_examples():
    import argparse

    root, commands = _subparsers()
    assert set(commands) == {"train", "eval", "scenarios", "backtest", "signal", "walkforward", "export", "sweep",
                             "compare"}
    missing = [f"{name} {'/'.join(a.option_strings) or a.dest}"
               for name, parser in [("asyncdqn", root), *commands.items()] for a in parser._actions
               if not isinstance(a, argparse._HelpAction) and not a.help]
    assert not missing, f"options without help: {missing}"
    for name, parser in commands.items():
        text = parser.format_help()
        assert "examples:\n" in text and text.rstrip().splitlines()[-1].startswith("  asyncdqn "), name


def test_the_examples_parse_and_the_quick_ones_run(tmp_path, monkeypatch, capsys):
    import shlex

    from asyncdqn.cli import EXAMPLES, _parser

    for name, lines in EXAMPLES.items():
        for line in lines:
            argv = shlex.split(line)[1:]
            assert _parser().parse_args(argv).command == name, line
    monkeypatch.chdir(tmp_path)
    assert main(shlex.split(EXAMPLES["scenarios"][0])[1:]) == 0
    assert main(shlex.split(EXAMPLES["backtest"][1])[1:]) == 0   # the shipped CSV, from an empty folder
    assert (tmp_path / "runs" / "backtest-long" / "report.json").is_file()
