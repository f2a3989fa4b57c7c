"""xlembed as a Python package: one import name, a public surface, one object
for a built matrix, and a picture of the space."""
import os
import re
import subprocess
import sys
import zipfile

import pytest
import torch
from typer.testing import CliRunner

import xlembed
from xlembed.cli.main import app

from .conftest import REPO
from .test_cli import built, corpus  # noqa: F401  (fixtures: a tiny-model build of a small corpus)


def test_the_wheel_installs_one_top_level_name_and_the_default_config(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        check=True,
        capture_output=True,
    )
    [wheel] = tmp_path.glob("xlembed-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")} == {"xlembed"}
    top_level = [n for n in names if n.endswith("top_level.txt")]
    if top_level:
        assert zipfile.ZipFile(wheel).read(top_level[0]).decode().split() == ["xlembed"]
    assert "xlembed/configs/default.toml" in names and "xlembed/cli/main.py" in names
    assert f"xlembed-{xlembed.__version__}-" in wheel.name


def test_a_users_pipeline_py_and_cli_py_do_not_shadow_xlembed(tmp_path, built):
    (tmp_path / "pipeline.py").write_text("raise SystemExit('the user module was imported')\n")
    (tmp_path / "cli.py").write_text("raise SystemExit('the user module was imported')\n")
    code = (
        f"import xlembed; e = xlembed.load({str(built)!r}); print(e.translate('猫', k=3)); e.to_torch(); print(len(e))"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert re.match(r"\[\('\w+', -?\d\.\d+\)", proc.stdout), proc.stdout


def test_a_folder_named_xlembed_in_the_current_directory_does_not_hide_the_package(tmp_path):
    """As when Python runs from the parent of a clone named `xlembed`: the installed package still wins."""
    (tmp_path / "xlembed").mkdir()
    code = "import xlembed; print(xlembed.load.__module__, xlembed.__file__)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("xlembed.embeddings ") and str(tmp_path) not in proc.stdout


def test_the_built_wheel_installs_and_runs_from_elsewhere(tmp_path):
    """The README's `pip install` of a wheel: the wheel, installed without its (already present)
    dependencies into a fresh target, gives `import xlembed` and the command."""
    wheel_command = ["pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(REPO)]
    subprocess.run([sys.executable, "-m", *wheel_command], check=True, capture_output=True)
    [wheel] = tmp_path.glob("xlembed-*.whl")
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    (tmp_path / "xlembed").mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}
    code = ("import xlembed, xlembed.cli.main; print(xlembed.__file__); "
            "print(xlembed.load_config('default').to_dict() == xlembed.Config().to_dict())")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(target / "xlembed" / "__init__.py"), "True"]
    proc = subprocess.run([str(target / "bin" / "xlembed"), "--version"], env=env, capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.split() == ["xlembed", xlembed.__version__], proc.stderr


def test_the_public_surface():
    for name in ("load", "run", "load_config", "Embeddings", "XlembedError", "Config", "EncodeConfig", "__version__"):
        assert name in xlembed.__all__ and hasattr(xlembed, name)
    assert (
        xlembed.__version__
        == subprocess.run(
            [sys.executable, "-m", "xlembed.cli", "--version"], capture_output=True, text=True
        ).stdout.split()[1]
    )


def test_the_shipped_default_config_is_found_without_a_path_and_equals_the_defaults():
    from xlembed.config import default_config_path

    assert default_config_path().is_file()
    assert xlembed.load_config(default_config_path()).to_dict() == xlembed.Config().to_dict()
    assert (REPO / "configs" / "default.toml").read_text() == default_config_path().read_text()
    assert xlembed.load_config("default").to_dict() == xlembed.Config().to_dict()  # as `--config default`


def test_every_option_is_declared_once_and_the_cli_follows_the_declarations():
    """Each config field is a flag of `run` with the declared default; no flag of run is undeclared."""
    from typer.main import get_command

    from xlembed.config import all_fields, flag_name, plain

    run = get_command(app).commands["run"]
    params = {p.name: p for p in run.params}
    declared = list(all_fields())
    assert len({f.name for _, f in declared}) == len(declared)
    for stage, f in declared:
        assert params[f.name].opts[0] == f"--{flag_name(f)}"
        assert plain(params[f.name].default) == plain(f.default)  # enums by value, a Layer by its text
    assert set(params) - {f.name for _, f in declared} == {"out", "work", "force", "quiet", "config_file", "json_out"}


def test_config_in_python_takes_strings_for_paths_and_choices(tmp_path):
    config = xlembed.Config().set(tsv=str(tmp_path / "p.tsv"), symmetrization="intersect")
    (tmp_path / "p.tsv").write_text("a\tb\n")
    config.validate(("tokenize", "align"))
    assert config.tokenize.tsv == tmp_path / "p.tsv" and config.align.symmetrization is xlembed.Symmetrization.intersect
    with pytest.raises(xlembed.XlembedError, match="unknown option 'samplerz'"):
        xlembed.Config().set(samplerz=3)


def test_run_from_python(tmp_path, corpus, tiny_bert):
    config = xlembed.Config().set(tsv=corpus, model=tiny_bert, samplers=1)
    manifest = xlembed.run(config, tmp_path / "w", tmp_path / "out")
    e = xlembed.load(tmp_path / "out")
    assert manifest["counts"]["vocab_size"] == len(e) and "猫" in e
    assert e.to_torch().weight.shape == e.vectors.shape and e.to_torch().padding_idx == 0


def test_embeddings_queries(built):
    e = xlembed.load(built)
    pairs = e.most_similar("猫", k=3)
    assert len(pairs) == 3 and "猫" not in [w for w, _ in pairs]
    assert all(-1.0001 <= c <= 1.0001 for _, c in pairs) and [c for _, c in pairs] == sorted(
        [c for _, c in pairs], reverse=True
    )
    cosine = torch.nn.functional.cosine_similarity(
        e["猫"], e.english_vectors[e.index(e.translate("猫", k=1)[0][0], "en")], dim=0
    )
    assert float(cosine) == pytest.approx(e.translate("猫", k=1)[0][1], abs=1e-4)
    assert len(e.translate("猫", k=2, csls=3)) == 2
    assert e.tokenizer.encode("猫") == [e.index("猫")]


# --- the picture -------------------------------------------------------------------------------------

def test_plot_writes_an_offline_svg_and_html_with_chinese_labels(built, tmp_path):
    (tmp_path / "words.txt").write_text("猫\n狗\n书\n", encoding="utf-8")
    for name in ("map.svg", "map.html"):
        result = CliRunner().invoke(
            app, ["plot", str(built), "-o", str(tmp_path / name), "--words", str(tmp_path / "words.txt")]
        )
        assert result.exit_code == 0, result.output
        text = (tmp_path / name).read_text(encoding="utf-8")
        for word in ("猫", "狗", "书"):
            assert f">{word}</text>" in text
        assert (
            "http://" not in text.replace("http://www.w3.org/2000/svg", "") and "https://" not in text
        )  # opens offline
        assert len(re.findall(r"<circle ", text)) >= 3
    assert (tmp_path / "map.html").read_text(encoding="utf-8").startswith("<!doctype html>")


def test_plot_places_words_by_their_vectors(built):
    from xlembed.plot import layout

    e = xlembed.load(built)
    points, lines = layout(e, ["猫", "狗", "书"], english=False)
    assert [p[0] for p in points] == ["猫", "狗", "书"] and lines == []
    xy = torch.tensor([[x, y] for _, _, x, y in points])
    assert torch.allclose(xy.mean(0), torch.zeros(2), atol=1e-6)  # PCA coordinates are centred


def test_plot_errors_are_one_line(built, tmp_path):
    (tmp_path / "words.txt").write_text("猫\n不存在的词\n", encoding="utf-8")
    result = CliRunner().invoke(
        app, ["plot", str(built), "-o", str(tmp_path / "m.svg"), "--words", str(tmp_path / "words.txt")]
    )
    assert result.exit_code == 2 and "not in the vocabulary: 不存在的词" in result.output
    result = CliRunner().invoke(app, ["plot", str(built), "-o", str(tmp_path / "m.gif")])
    assert result.exit_code == 2 and "must be .html, .svg or .png" in result.output


NO_TORCH = [["--help"], ["--version"], ["info", "BUILT"], ["info", "BUILT", "--json"], ["verify", "BUILT"]]


@pytest.mark.parametrize("args", NO_TORCH)
def test_the_commands_that_need_no_model_start_without_torch_or_transformers(args, built):
    """`xlembed --help`, `--version`, `info` and `verify` never import torch or transformers (seconds of imports)."""
    args = [str(built) if a == "BUILT" else a for a in args]
    code = ("import sys\nfrom xlembed.cli.main import app\n"
            f"try:\n    app({args!r})\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "print('loaded:', sorted({'torch', 'transformers', 'tokenizers', 'safetensors.torch'} & set(sys.modules)))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "loaded: []"


def test_info_from_the_headers_is_what_the_loaded_matrix_says(built):
    from xlembed.outdir import describe

    assert describe(built) == xlembed.load(built).info()
