"""Results that CI jobs parse: --json on run, neighbors, verify and info; tables without box characters when piped;
the model recorded by name and hash; reused stages marked as such."""

import json

import xlembed

from .test_cli import built, corpus  # noqa: F401  (fixtures: a tiny-model build of a small corpus)
from .test_cli import xlembed as cli


def test_neighbors_json_and_piped_output(built):
    result = cli("neighbors", built, "猫", "-k", "3", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["word"] == "猫" and data["lang"] == "zh" and isinstance(data["projected"], bool)
    e = xlembed.load(built)
    assert [(n["word"], round(n["cos"], 4)) for n in data["chinese"]] == [
        (w, round(c, 4)) for w, c in e.most_similar("猫", 3)
    ]
    assert [n["word"] for n in data["english"]] == [w for w, _ in e.translate("猫", 3)]
    piped = cli("neighbors", built, "猫", "-k", "3")  # CliRunner's stdout is not a terminal
    assert piped.exit_code == 0
    assert not set("─│┃━┏┡└╭") & set(piped.stdout)
    lines = piped.stdout.splitlines()
    assert lines[0].split("\t") == ["Chinese", "cos", "English", "cos"] and len(lines) == 4
    assert lines[1].split("\t")[0] == data["chinese"][0]["word"]


def test_verify_json(built, tmp_path):
    result = cli("verify", built, "--json")
    assert result.exit_code == 0 and json.loads(result.stdout) == {"out": str(built), "ok": True, "problems": []}


def test_run_json_prints_the_manifest_and_marks_reused_stages(built, corpus, tiny_bert):
    result = cli("run", "--tsv", corpus, "--model", tiny_bert, "--out", built, "--json", "--oov", "chars")
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.stdout)
    assert manifest == json.loads((built / "manifest.json").read_text("utf-8"))
    assert manifest["reused"] == ["tokenize", "encode", "align", "project"]  # only write changed
    assert "reused the result an earlier command computed in" in result.stderr
    assert manifest["model"]["name"] == tiny_bert.name and len(manifest["model"]["sha256"]) == 64


def test_info_shows_the_model_by_name_and_seed_as_a_number(built, tiny_bert):
    result = cli("info", built, "--json")
    info = json.loads(result.stdout)
    assert info["seed"] == 0 and info["model"] == tiny_bert.name and len(info["model_sha256"]) == 64
    assert str(tiny_bert) not in cli("info", built).stdout
