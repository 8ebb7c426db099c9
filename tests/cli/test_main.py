import subprocess
import sys
from pathlib import Path

import pytest
import torch

from napari_unet.cli.main import main
from napari_unet.errors import ModelFileError, SettingsError
from napari_unet.model.checkpoint import Model
from napari_unet.model.tasks import make_task


def test_every_subcommand_has_help(capsys):
    for cmd in ["predict", "train", "import", "info", "models"]:
        with pytest.raises(SystemExit) as exc:
            main([cmd, "--help"])
        assert exc.value.code == 0
        assert cmd in capsys.readouterr().out


def test_usage_error_exits_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["import"])
    assert exc.value.code == 2


def test_info_prints_task_normalisation_and_hash(tmp_path, capsys):
    torch.manual_seed(0)
    model = Model.new(make_task("denoise"), base=4, name="dn")
    path = model.save(tmp_path / "dn.safetensors", iterations=3)
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "denoising of grayscale scans" in out and "percentile 0.5..99.5" in out
    assert model.meta.hash in out and "iterations: 3" in out


def test_info_on_broken_file_exits_2_with_file_name(tmp_path, capsys):
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"\x01\x02")
    assert main(["info", str(bad)]) == 2  # a bad argument, as in predict --model
    assert "broken.safetensors" in capsys.readouterr().err


def test_models_lists_bundled(capsys):
    assert main(["models"]) == 0
    assert capsys.readouterr().out.strip()


def test_cli_and_core_run_without_qt_or_napari(tmp_path):
    """Block napari/Qt imports and run the CLI: the core must not need them."""
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in {'napari', 'qtpy', 'PyQt6', 'PyQt5', 'PySide6',"
        " 'magicgui', 'superqt'}:\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from napari_unet.cli.main import main\n"
        "import napari_unet.model.checkpoint, napari_unet.model.tasks, napari_unet.model.unet\n"
        "sys.exit(main(['models']))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_import_napari_unet_is_light():
    code = "import sys, napari_unet; print('torch' in sys.modules, 'monai' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.split() == ["False", "False"]


@pytest.fixture(scope="module")
def usage_inputs(tmp_path_factory):
    import torch

    from support.batch_data import nifti_scan, tiny_model

    root = tmp_path_factory.mktemp("usage")
    torch.save({"w": torch.zeros(1)}, root / "weights.pth")
    return {"root": root, "scan": nifti_scan(root / "scan.nii.gz"),
            "model": tiny_model(root / "m.safetensors")}


def _usage_case(case: str, root, scan, model) -> list:
    predict = ["predict", scan, "-o", root / "out", "--model", model]
    return {
        "device foo": [*predict, "--device", "foo"],
        "device cuda:abc": [*predict, "--device", "cuda:abc"],
        "-o names a file": ["predict", scan, "-o", scan, "--model", model],
        "scheduler garbage": [*predict, "--scheduler", "garbage://x"],
        "info missing file": ["info", root / "missing.safetensors"],
        "import missing file": ["import", root / "missing.pth", "-o", root / "x.safetensors",
                                "--task", "segment", "--in-channels", "1", "--classes", "2"],
        "import -o names the input": ["import", root / "weights.pth", "-o",
                                      root / "weights.pth", "--task", "segment",
                                      "--in-channels", "1", "--classes", "2"],
        "train -o names the scan": ["train", "--task", "segment", "--images", scan, "--labels",
                                    scan, "-o", scan],
        "train device": ["train", "--task", "segment", "--images", scan, "--labels", scan,
                         "-o", root / "t.safetensors", "--device", "foo"],
    }[case]


USAGE_CASES = ["device foo", "device cuda:abc", "-o names a file", "scheduler garbage",
               "info missing file", "import missing file", "import -o names the input",
               "train -o names the scan", "train device"]


@pytest.mark.parametrize("case", USAGE_CASES)
def test_usage_errors_are_one_line_and_exit_2_in_every_command(usage_inputs, capsys, case):
    import time

    argv = [str(a) for a in _usage_case(case, **usage_inputs)]
    inputs = [usage_inputs["scan"], usage_inputs["root"] / "weights.pth"]
    before = [p.read_bytes() for p in inputs]
    start = time.monotonic()
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert time.monotonic() - start < 20  # no minute-long wait for a scheduler
    assert err.startswith(f"napari-unet {argv[0]}: error: ") and err.count("\n") == 1
    assert "Traceback" not in err
    assert [p.read_bytes() for p in inputs] == before  # -o naming an input left it alone
    with pytest.raises(Exception) as raised:  # --debug: the exception itself, traceback and all
        main([*argv, "--debug"])
    assert isinstance(raised.value, (SettingsError, ModelFileError))


def test_the_console_script_follows_the_same_rule(usage_inputs):
    import time

    from support.cli_run import console

    start = time.monotonic()
    proc = console(*_usage_case("scheduler garbage", **usage_inputs))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == ("napari-unet predict: error: --scheduler 'garbage://x' is not a Dask "
                           "scheduler address; expected e.g. tcp://HOST:8786 (schemes: tcp, "
                           "tls, ucx, ws, wss, inproc)\n")
    assert proc.stdout == "" and time.monotonic() - start < 60


def test_output_into_a_closed_pipe_is_no_error():
    """``napari-unet info MODEL | head -1``: the reader leaving early is not a failure."""
    exe = str(Path(sys.executable).with_name("napari-unet"))
    res = subprocess.run(f"'{exe}' info brain-tissue | head -c 10 > /dev/null; "
                         "echo ${PIPESTATUS[0]}", shell=True, executable="/bin/bash",
                         capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "0" and "error" not in res.stderr, res.stderr
