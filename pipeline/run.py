"""The whole chain: tokenize → encode → align → project → write."""
from __future__ import annotations

from pathlib import Path

from .align import align
from .config import AlignOptions, EncodeOptions, ProjectOptions, TokenizeOptions, WorkDir, WriteOptions
from .encode import encode
from .io import Reporter, SilentReporter, check_output_dir
from .project import project
from .tokenize import tokenize
from .write import write


def run(tokenize_opts: TokenizeOptions, encode_opts: EncodeOptions, align_opts: AlignOptions,
        project_opts: ProjectOptions, write_opts: WriteOptions, work: WorkDir, out: Path,
        reporter: Reporter = SilentReporter(), on_stage=lambda stage, record: None, force: bool = False) -> dict:
    """Run every stage in order, skipping those whose record shows they are
    up to date (unless `force`); `on_stage(name, record)` is called after
    each. Returns the manifest."""
    check_output_dir(out)  # fail before an hour of encoding, not after
    for name, stage in (("tokenize", lambda: tokenize(tokenize_opts, work, reporter, force)),
                        ("encode", lambda: encode(encode_opts, work, reporter, force)),
                        ("align", lambda: align(align_opts, work, reporter, force)),
                        ("project", lambda: project(project_opts, work, reporter, force))):
        on_stage(name, stage())
    manifest = write(write_opts, work, out)
    on_stage("write", manifest)
    return manifest
