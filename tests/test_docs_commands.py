"""Every shell command in the READMEs runs (README.md, pretrain/, finetune/, datasets/*/): a renamed flag or a stale
example fails here.

Commands are extracted from the markdown (fenced and indented code blocks, ``for`` loops expanded, and inline
`sciformer ...` / `python ...` / `bash ...` spans). Each is classified by ``PLAN`` below; a command that no rule
classifies fails ``test_every_documented_command_is_classified``, so a new README command cannot be skipped silently.
How a command is covered:

- ``run``: the command's words unchanged, run in a scratch copy of the repository (``configs/``, ``benchmarks/``,
  ... linked; ``../shared/data`` holds tiny copies of the shared files) with size overrides appended (fewer
  trajectories, 16² grids, 1 epoch of 2 batches, ``limit=`` ...). Its prerequisites run first: every store or
  checkpoint a command reads is made by the documented command that writes that path (found by its ``--out`` /
  output argument), or, for the README's placeholder inputs (``pre.ckpt``, ``wave.zarr``, ``ft.ckpt``), by a named
  step of this file.
- ``print_config``: GPU / DDP / multi-node runs: the same words plus ``--print_config``; the config must resolve and
  the files it names in the repository must exist. The configs are also instantiated on tiny stores in
  ``tests/test_configs.py``.
- ``dry_run``: launchers and scripts: ``sbatch`` / ``srun`` / ``torchrun`` are stubs that run the resulting
  ``sciformer`` command with ``--print_config``; a ``python`` script's own argument parser parses the same
  arguments and the script stops there.
- ``help`` / ``synopsis``: a bare mention (`sciformer finetune`) or a usage line with placeholders
  (`sciformer data info STORE`): ``--help`` works, and every flag and every listed alternative exists.
- ``covered``: run by another test, named here (``bash setup.sh quickstart`` by ``tests/test_quickstart.py``).
- ``skip``: with the reason (data absent from ``../shared/data``; network installs).
"""

from __future__ import annotations

import argparse
import os
import re
import runpy
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from sciformer.cli import main

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
DOCS = [ROOT / "README.md", *sorted((ROOT / "pretrain").glob("*.md")), *sorted((ROOT / "finetune").glob("*.md")),
        *sorted((ROOT / "datasets").glob("*/README.md"))]


# ---- extraction ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Command:
    file: str
    line: int
    text: str  # whitespace-normalised, comments stripped, continuations joined

    @property
    def id(self) -> str:
        return f"{self.file}:{self.line}:{self.text[:60]}"


PROGRAMS = ("sciformer", "python", "bash", "sbatch", "torchrun", "pip", "for")
INLINE = re.compile(r"(?<!`)`((?:sciformer|python|bash) [^`]+)`(?!`)")
ENV_PREFIX = re.compile(r"^(?:[A-Z_][A-Z0-9_]*=\S+\s+)*")


def _is_command(line: str) -> bool:
    return ENV_PREFIX.sub("", line).split(" ", 1)[0] in PROGRAMS


def _block_commands(lines: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Shell lines of a code block: continuations joined, comments stripped, ``for`` loops expanded."""
    joined, buf, start = [], "", 0
    for n, raw in lines:
        s = raw.strip()
        if buf:
            buf += " " + s
        else:
            buf, start = s, n
        if buf.endswith("\\"):
            buf = buf[:-1].rstrip()
            continue
        joined.append((start, buf))
        buf = ""
    out, i = [], 0
    while i < len(joined):
        n, s = joined[i]
        s = re.sub(r"(^|\s)#\s.*$", "", s).strip()
        loop = re.fullmatch(r"for (\w+) in (.+?);\s*do", s)
        if loop:
            var, values = loop.group(1), loop.group(2).split()
            body = []
            i += 1
            while joined[i][1].strip() != "done":
                body.append(joined[i][1].strip())
                i += 1
            out += [(n, b.replace(f"${var}", v)) for v in values for b in body]
        elif s and _is_command(s):
            out.append((n, s))
        i += 1
    return out


def extract(path: Path) -> list[Command]:
    rel = str(path.relative_to(ROOT))
    found: list[tuple[int, str]] = []
    fence, block = False, []
    lines = path.read_text().splitlines()
    prose = []  # the lines outside code blocks (code lines blanked), for inline spans that wrap across lines
    for n, line in enumerate(lines, 1):
        if line.strip().startswith("```"):
            if fence:
                found += _block_commands(block)
                block = []
            fence = not fence
            prose.append("")
            continue
        if fence or (line.startswith("    ") and (block or _is_command(line.strip()))):  # fenced or indented code
            block.append((n, line))
            prose.append("")
            continue
        if block:
            found += _block_commands(block)
            block = []
        prose.append(line.replace("\\|", "|"))
    found += _block_commands(block)
    text = "\n".join(prose)
    found += [(text[:m.start()].count("\n") + 1, m.group(1)) for m in INLINE.finditer(text)]
    return [Command(rel, n, re.sub(r"\s+", " ", t.strip())) for n, t in sorted(found)]


COMMANDS = [c for doc in DOCS for c in extract(doc)]


# ---- classification --------------------------------------------------------------------------------------------
TRAINER_TINY = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
                "--trainer.limit_test_batches", "1", "--trainer.max_time", "null", "--trainer.enable_progress_bar",
                "false", "--trainer.enable_model_summary", "false"]
GRID_TINY = ["--trajectories", "10", "--resolution", "16", "--option", "snapshots=5", "--option", "workers=1"]
SHARED_INPUT = "../shared/data/"


@dataclass
class Plan:
    how: str  # run | print_config | dry_run | help | synopsis | covered | skip
    overrides: list[str] = field(default_factory=list)
    needs: list[str] = field(default_factory=list)  # named steps run first (see STEPS)
    reason: str = ""
    slow: bool = False  # run only with `-m slow`; the default suite checks the same words with --print_config


# (regex matched against the whole command, plan); first match wins. Exact strings for every non-run class.
RULES: list[tuple[str, Plan]] = [
    # covered elsewhere / CI itself / network
    (r"bash setup\.sh quickstart", Plan("covered", reason="tests/test_quickstart.py")),
    (r"bash setup\.sh test|bash \.ci/run", Plan("covered", reason="this is the CI run itself (.ci/run runs this suite)")),
    (r"bash setup\.sh install", Plan("skip", reason="creates a venv and installs packages from the network")),
    # data builders at tiny size
    (r"sciformer data build (ns-\S+|wave-\S+|allen-cahn) .*", Plan("run", GRID_TINY)),
    (r"sciformer data build poisson-gauss .*", Plan("run", ["--trajectories", "10", "--resolution", "16",
                                                             "--option", "workers=1"])),
    (r"sciformer data build tgv-3d .*", Plan("run", ["--trajectories", "8", "--resolution", "8", "--option",
                                                     "snapshots=3", "--option", "workers=1"])),
    (r"sciformer data build qm9-etkdg .*", Plan("run", ["--option", "limit=12", "--option", "workers=1"])),
    (r"sciformer data convert \.\./shared/data/\S+ \S+ --from \S+.*", Plan("run")),
    (r"sciformer data info data/\S+", Plan("run")),
    # training runs on this CPU at tiny size
    (r"sciformer fit -c configs/pretrain/(scot_tiny_cpu|factformer_2d_ns|factformer_3d_tgv)\.yaml", Plan("run", TRAINER_TINY)),
    (r"sciformer fit -c configs/timeseries/itransformer_etth1_96\.yaml", Plan("run", TRAINER_TINY)),
    (r"sciformer fit -c configs/molecules/adit_ae_joint\.yaml",
     Plan("run", [*TRAINER_TINY, "--model.init_args.model", "adit-vae-tiny", "--data.init_args.batch_size", "4"])),
    # GPU / DDP / cluster
    (r"sciformer fit -c configs/pretrain/scot_t_ns\.yaml", Plan("print_config", reason="scOT-T, DDP, bf16, 128²: GPUs")),
    (r"sciformer fit -c configs/pretrain/scot_t_ns\.yaml --model\.init_args\.compile model --model\.init_args\.cudagraphs true",
     Plan("print_config", reason="CUDA graphs need a GPU")),
    (r"sciformer fit -c configs/pretrain/scot_b_fsdp\.yaml", Plan("print_config", reason="scOT-B, FSDP2 on GPUs")),
    (r"sciformer fit -c configs/pretrain/scot_t_ns\.yaml --trainer\.plugins sciformer\.precision\.BF16MasterWeights",
     Plan("print_config", reason="scOT-T, DDP, 128²: GPUs (the plugin through `sciformer fit` on CPU: "
                                 "tests/test_resume_tasks.py)")),
    (r"sciformer export runs/scot_b_fsdp/checkpoints/last\.ckpt exports/scot-b",
     Plan("covered", reason="tests/test_fsdp.py")),  # exports a sharded checkpoint the same way
    (r"python benchmarks/train_throughput\.py .*", Plan("dry_run", reason="GPU throughput benchmark")),
    (r"sbatch .*pretrain/slurm\.sbatch .*", Plan("dry_run", reason="SLURM, several GPU nodes")),
    (r"NNODES=.* bash pretrain/torchrun\.sh .*", Plan("dry_run", reason="torchrun on GPU nodes")),
    # README placeholders made by named steps
    (r"sciformer convert poseidon Poseidon-T/ exports/poseidon-t", Plan("run", needs=["Poseidon-T"])),
    (r"sciformer finetune --ckpt pre\.ckpt --data wave\.zarr .*",
     Plan("run", ["--epochs", "1", "--fno_model", "fno-2d-tiny", "--time_stride", "2"], needs=["pre.ckpt", "wave.zarr"],
          slow=True, reason="9 cells (8/32/128 trajectories x 3 models; repeated list flags add, they cannot shrink it): "
                            "8 min on the shared 2-core machine")),
    (r"sciformer rollout --ckpt ft\.ckpt --data wave\.zarr --mode ar\|direct\|mixed .*",
     Plan("run", ["--trajectories", "2", "--steps", "2", "--device", "cpu"], needs=["ft.ckpt", "wave.zarr"])),
    # the real-data fine-tuning sweeps (minutes to an hour of CPU): the configs are instantiated by test_configs.py,
    # the sweeps run at tiny size in test_finetune_kinds.py with the same flags
    (r"sciformer fit -c configs/(timeseries/itransformer_pretrain_ett3|molecules/graph_carbon24_energy)\.yaml",
     Plan("print_config", reason="CPU pretraining of 6-12 minutes on the real stores")),
    (r"sciformer finetune --ckpt runs/(itransformer_pretrain_ett3|graph_carbon24_energy)/checkpoints/best\.ckpt .*",
     Plan("covered", reason="tests/test_finetune_kinds.py")),  # the series and atom sweeps at tiny size
    # scripts: hours or GPUs
    (r"python benchmarks/itransformer_reproduce\.py .*", Plan("dry_run", reason="full ETTh1/Weather training runs (hours, or a GPU)")),
    (r"python benchmarks/scot_step\.py .*", Plan("dry_run", reason="CUDA benchmark")),
    (r"python benchmarks/molecules_adit\.py (budget|diagnose).*", Plan("dry_run", reason="GPU budget run / needs trained ADiT models")),
    (r"python benchmarks/rollout\.py --ckpt \.\.\. .*", Plan("dry_run", reason="benchmark of a trained scOT-T ('...' is the user's checkpoint)")),
    (r"python finetune/run_suite\.py .*", Plan("dry_run", reason="the CPU suite takes about an hour")),
    (r"python finetune/ablation\.py( .*)?", Plan("dry_run", reason="the recipe ablation: 7 pretrainings, ~170 fine-tunes")),
    # ONNX export (README "Sharing and deploying"): tests/test_onnx_export.py runs the example against the PyTorch
    # rollout engine; the benchmark exports and times four realistic models
    (r"python examples/onnx_rollout\.py .*", Plan("covered", reason="tests/test_onnx_export.py")),
    (r"python benchmarks/onnx_inference\.py .*", Plan("dry_run", reason="exports scOT-T, FactFormer, FNO and "
                                                                       "iTransformer at full size (20+ minutes)")),
    (r"sciformer export CKPT OUT --onnx( --opset \d+)?", Plan("synopsis")),
    # training on upstream files in place (README "Data where it lives"): DATASET_DIR is the user's folder;
    # tests/data/test_lazy_sources.py trains on a Well directory through `sciformer fit`
    (r"sciformer fit -c configs/pretrain/scot_tiny_cpu\.yaml --data\.init_args\.stores '\[DATASET_DIR\]'",
     Plan("print_config", reason="a user's Well directory / PDEBench / Poseidon file (placeholder)")),
    (r"python benchmarks/data_loading\.py --only well", Plan("dry_run", reason="reading benchmark (minutes)")),
    # Hub in/out (README "Hugging Face Hub"): the network is never used in tests
    (r"sciformer convert poseidon camlab-ethz/Poseidon-T exports/poseidon-t",
     Plan("covered", reason="tests/test_hub.py")),  # a Hub id converted from a local cache, HF_HUB_OFFLINE=1
    (r"sciformer export runs/lightning_logs/version_0/checkpoints/last\.ckpt exports/scot-wave --results \S+",
     Plan("covered", reason="tests/test_model_card.py")),  # exports a real `sciformer fit` run with results
    (r"sciformer export exports/scot-wave exports/scot-wave-hub --push my-org/scot-wave",
     Plan("covered", reason="tests/test_hub.py")),  # pushes through a mocked HfApi (a real push needs a token)
    (r"sciformer rollout --ckpt ft\.ckpt --data wave\.zarr --mode ar --logger tensorboard .*",
     Plan("run", ["--trajectories", "2", "--steps", "2", "--device", "cpu"], needs=["ft.ckpt", "wave.zarr"])),
    # upstream collections (datasets/the-well, pdebench, poseidon): the data are not in ../shared/data; the readers
    # run on files written from the upstream layouts in tests/data/test_upstream_{well,pdebench,poseidon}.py
    (r"sciformer fit -c configs/pretrain/\S+\.yaml --data\.init_args\.stores '\[(/data/the_well/datasets|pdebench|poseidon)/"
     r"\S+\]'", Plan("print_config", reason="trains on a downloaded upstream collection (absent here)")),
    (r"sciformer data convert (the_well|pdebench|poseidon)/\S+ data/\S+\.zarr --from (well|well-dir|pdebench|poseidon)"
     r"( --option \S+)*", Plan("synopsis", reason="upstream files absent from ../shared/data")),
    # usage lines with placeholders, bare mentions
    (r"sciformer data convert FILE OUT\.zarr --from .*|sciformer data info (--verify )?STORE|sciformer convert poseidon DIR OUT"
     r"|sciformer sample --kind molecule\|crystal|sciformer fit -c CONFIG", Plan("synopsis")),
    (r"sciformer (sample|quickstart|finetune|export|rollout|data build|fit|convert poseidon)", Plan("help")),
]


def plan_of(text: str) -> Plan | None:
    return next((p for pattern, p in RULES if re.fullmatch(pattern, text)), None)


def test_every_documented_command_is_classified():
    lines = [f"{c.file}:{c.line}: [{(plan_of(c.text) or Plan('UNCLASSIFIED')).how}] {c.text}" for c in COMMANDS]
    print(f"{len(COMMANDS)} documented commands ({len({c.text for c in COMMANDS})} distinct):", *lines, sep="\n  ")
    assert len(COMMANDS) >= 50, "the extractor lost commands"
    missing = [line for line in lines if "[UNCLASSIFIED]" in line]
    assert not missing, "documented commands that no test runs or classifies (add a rule to PLAN):\n" + "\n".join(missing)
    unused = [pattern for pattern, _ in RULES if not any(re.fullmatch(pattern, c.text) for c in COMMANDS)]
    assert not unused, f"rules that match no documented command (stale): {unused}"


# ---- workspace: a scratch copy of the repository -------------------------------------------------------------
class Workspace:
    def __init__(self, root: Path):
        self.root = root
        self.done: dict[str, bool] = {}

    def path(self, rel: str) -> Path:
        return self.root / rel

    # -- running
    def sciformer(self, argv: list[str], capsys=None) -> None:
        cwd = os.getcwd()
        os.chdir(self.root)
        try:
            rc = main(argv)
        finally:
            os.chdir(cwd)
        err = capsys.readouterr().err[-3000:] if capsys is not None else ""
        assert rc == 0, f"sciformer {shlex.join(argv)} -> exit {rc}\n{err}"

    def run_documented(self, text: str, capsys=None) -> None:
        """Run a documented command (its plan's overrides appended), after what it needs; once per workspace."""
        if text in self.done:
            return
        plan = plan_of(text)
        assert plan is not None and plan.how == "run", text
        for need in plan.needs:
            self.step(need, capsys)
        words = shlex.split(text)
        for inp in inputs_of(words):
            self.provide(inp, capsys)
        if any(w.startswith(SHARED_INPUT) and not (self.root / w).exists() for w in words):
            src = next(w for w in words if w.startswith(SHARED_INPUT))
            self.done[text] = False
            pytest.skip(f"{src} is not in the shared data ({SHARED_DATA})")
        assert words[0] == "sciformer"
        alternatives = [(i, w) for i, w in enumerate(words) if "|" in w]
        if alternatives:  # `--mode ar|direct|mixed`: run every alternative
            i, w = alternatives[0]
            for alt in w.split("|"):
                self.sciformer([*words[1:i], alt, *words[i + 1:], *plan.overrides], capsys)
        else:
            self.sciformer([*words[1:], *plan.overrides], capsys)
        for out in outputs_of(words):
            assert (self.root / out).exists(), f"{text}: wrote no {out}"
        self.done[text] = True

    def provide(self, rel: str, capsys=None) -> None:
        """Make an input path by the documented command that writes it."""
        if (self.root / rel).exists() or rel in STEPS:
            if rel in STEPS:
                self.step(rel, capsys)
            return
        producers = [c.text for c in COMMANDS if rel in outputs_of(shlex.split(c.text))]
        assert producers, f"no documented command writes {rel}"
        self.run_documented(producers[0], capsys)
        if self.done.get(producers[0]) is False:
            pytest.skip(f"{rel}: its documented producer was skipped")

    def step(self, name: str, capsys=None) -> None:
        if not (self.root / name).exists():
            STEPS[name](self, capsys)


def outputs_of(words: list[str]) -> list[str]:
    """Paths a documented sciformer command writes (relative to the repository root)."""
    if words[:3] == ["sciformer", "data", "build"] and "--out" in words:
        return [words[words.index("--out") + 1]]
    if words[:3] in (["sciformer", "data", "convert"], ["sciformer", "convert", "poseidon"]) and len(words) > 4:
        return [words[4]]
    if words[:2] == ["sciformer", "fit"]:
        return []
    return []


def inputs_of(words: list[str]) -> list[str]:
    """Data paths a documented command reads that must exist first (stores of its config, --ckpt/--data)."""
    ins = []
    if words[:2] == ["sciformer", "fit"] and "-c" in words:
        cfg = yaml.safe_load((ROOT / words[words.index("-c") + 1]).read_text())
        init = cfg.get("data", {}).get("init_args", {})
        ins += [*init.get("stores", []), *init.get("train", []), *init.get("test", [])]
    if words[:3] == ["sciformer", "data", "info"]:
        ins.append(words[3])
    return ins


def _ckpt_of_run(ws: Workspace, run_dir: str) -> Path:
    found = sorted((ws.root / run_dir).rglob("*.ckpt"))
    assert found, f"no checkpoint under {run_dir}"
    return found[-1]


def _step_poseidon(ws: Workspace, capsys) -> None:
    """``Poseidon-T/``: an upstream-format checkpoint directory (config.json + model.safetensors), tiny size."""
    from poseidon_upstream import write_upstream

    write_upstream(ws.path("Poseidon-T"), dict(num_channels=4, num_out_channels=4, image_size=16, patch_size=2,
                                               embed_dim=12, depths=[1, 1], num_heads=[3, 3], skip_connections=[1, 0],
                                               window_size=4, use_conditioning=True))


def _step_pre_ckpt(ws: Workspace, capsys) -> None:
    """``pre.ckpt``: the checkpoint of the README's CPU pretraining run (`fit -c configs/pretrain/scot_tiny_cpu.yaml`)."""
    ws.run_documented("sciformer fit -c configs/pretrain/scot_tiny_cpu.yaml", capsys)
    shutil.copy(_ckpt_of_run(ws, "runs/scot_tiny_cpu"), ws.path("pre.ckpt"))


def _step_wave(ws: Workspace, capsys) -> None:
    """``wave.zarr``: a wave store with enough trajectories for ``--samples 8,32,128`` (160: 128 in the train split)."""
    ws.sciformer(["data", "build", "wave-gauss", "--out", "wave.zarr", "--trajectories", "160", "--resolution", "16",
                  "--option", "snapshots=3", "--option", "workers=1"], capsys)


def _step_ft_ckpt(ws: Workspace, capsys) -> None:
    """``ft.ckpt``: an operator checkpoint trained on ``wave.zarr`` (the README's CPU pretraining config pointed at
    the wave store, 2 steps; the README's `finetune` run that would make one takes minutes, see PLAN)."""
    ws.step("wave.zarr", capsys)
    ws.sciformer(["fit", "-c", "configs/pretrain/scot_tiny_cpu.yaml", "--data.init_args.stores", "[wave.zarr]",
                  "--trainer.default_root_dir", "runs/ft", "--trainer.logger.init_args.save_dir", "runs/ft",
                  *TRAINER_TINY], capsys)
    shutil.copy(_ckpt_of_run(ws, "runs/ft"), ws.path("ft.ckpt"))


STEPS = {"Poseidon-T": _step_poseidon, "pre.ckpt": _step_pre_ckpt, "wave.zarr": _step_wave, "ft.ckpt": _step_ft_ckpt}


def _tiny_shared(dst: Path) -> None:
    """``../shared/data`` for the workspace: the time series as they are (the ETT protocol needs every row), the
    CIF tables cut to 24 structures (converting all of Perov-5 takes a minute), the rest linked."""
    for src in SHARED_DATA.rglob("*"):
        if not src.is_file():
            continue
        out = dst / src.relative_to(SHARED_DATA)
        out.parent.mkdir(parents=True, exist_ok=True)
        if src.suffix == ".csv" and src.parent.parent.name == "molecules" and src.parent.name != "molecules":
            with src.open() as f:  # CIF fields span lines inside quotes: cut by records, not by lines
                import pandas as pd

                pd.read_csv(f, nrows=24).to_csv(out, index=False)
        else:
            out.symlink_to(src)


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Workspace:
    base = tmp_path_factory.mktemp("docs")
    repo = base / "repo"
    repo.mkdir()
    for name in ("configs", "benchmarks", "pretrain", "finetune", "datasets", "setup.sh", ".ci"):
        if (ROOT / name).exists():
            (repo / name).symlink_to(ROOT / name)
    if SHARED_DATA.is_dir():
        _tiny_shared(base / "shared" / "data")
    return Workspace(repo)


# ---- the checks per class --------------------------------------------------------------------------------------
def _select(how: str, slow: bool | None = None) -> list:
    seen, out = set(), []
    for c in COMMANDS:
        p = plan_of(c.text)
        if p is not None and p.how == how and c.text not in seen and slow in (None, p.slow):
            seen.add(c.text)
            out.append(pytest.param(c, id=c.id, marks=[pytest.mark.slow] if p.slow and slow is None else []))
    return out


@pytest.mark.parametrize("cmd", _select("run"))
def test_documented_command_runs(cmd, ws, capsys):
    ws.run_documented(cmd.text, capsys)


@pytest.mark.parametrize("cmd", _select("run", slow=True))
def test_slow_command_config_is_valid(cmd, ws, capsys):
    """The default suite's check of a command too long for it: the same words with --print_config resolve, and
    what it reads exists after its prerequisites."""
    plan = plan_of(cmd.text)
    for need in plan.needs:
        ws.step(need, capsys)
    ws.sciformer([*shlex.split(cmd.text)[1:], "--print_config"], capsys=None)
    printed = yaml.safe_load(capsys.readouterr().out)
    for key in ("ckpt", "data"):
        if key in printed:
            assert (ws.root / printed[key]).exists(), printed[key]


@pytest.mark.parametrize("cmd", _select("print_config"))
def test_gpu_command_config_is_valid(cmd, ws, capsys):
    words = shlex.split(cmd.text)
    cfg = words[words.index("-c") + 1]
    assert (ROOT / cfg).is_file(), cfg
    ws.sciformer([*words[1:], "--print_config"], capsys=None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["class_path"].startswith("sciformer.") and printed["data"]["class_path"].startswith("sciformer.")


class _Parsed(Exception):
    pass


def _dry_run_script(ws: Workspace, words: list[str]) -> argparse.Namespace:
    """Run a python script until its argument parser has parsed ``words``; return what it parsed."""
    script = ws.root / words[1]
    assert script.is_file(), f"{words[1]} does not exist"
    parsed = {}
    original = argparse.ArgumentParser.parse_args

    def parse_args(self, args=None, namespace=None):
        parsed["ns"] = original(self, args, namespace)
        raise _Parsed

    cwd, argv = os.getcwd(), sys.argv
    argparse.ArgumentParser.parse_args = parse_args
    sys.argv = [str(script), *words[2:]]
    os.chdir(ws.root)
    try:
        runpy.run_path(str(script), run_name="__main__")
    except _Parsed:
        pass
    except SystemExit as e:
        raise AssertionError(f"{shlex.join(words)}: the script refused its arguments (exit {e.code})") from None
    finally:
        argparse.ArgumentParser.parse_args = original
        sys.argv = argv
        os.chdir(cwd)
    assert "ns" in parsed, f"{words[1]} never parsed its arguments"
    return parsed["ns"]


STUBS = {
    # sbatch: the #SBATCH geometry from the command line, then the script itself
    "sbatch": """#!/bin/bash
nodes=1; tasks=1
while [[ "$1" == --* ]]; do
  case "$1" in --nodes=*) nodes=${1#*=};; --ntasks-per-node=*) tasks=${1#*=};; esac; shift
done
SLURM_JOB_NUM_NODES=$nodes SLURM_NTASKS_PER_NODE=$tasks SLURM_CPUS_PER_TASK=1 exec bash "$@"
""",
    "srun": '#!/bin/bash\nexec "$@" --print_config\n',
    # torchrun: drop its own options, run the module once with --print_config
    "torchrun": """#!/bin/bash
while [[ "$1" != -m ]]; do shift; done
exec python "$@" --print_config
""",
}


@pytest.mark.parametrize("cmd", _select("dry_run"))
def test_launcher_or_script_dry_run(cmd, ws, tmp_path):
    words = shlex.split(cmd.text)
    program = ENV_PREFIX.sub("", cmd.text).split()[0]
    if words[0] == "python":
        ns = _dry_run_script(ws, words)
        if words[1] == "finetune/run_suite.py":  # its suite exists and names registered builders
            from sciformer.data.commands import BUILDERS

            suite = yaml.safe_load((ws.root / ns.suite).read_text())
            assert {t["name"] for t in suite["tasks"]} <= set(BUILDERS)
        return
    stubs = tmp_path / "bin"
    stubs.mkdir()
    for name, text in STUBS.items():
        (stubs / name).write_text(text)
        (stubs / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{stubs}:{Path(sys.executable).parent}:{os.environ['PATH']}",
           "SCIFORMER_VENV": str(Path(sys.executable).parents[1])}
    for w in words[1:]:
        if w.endswith((".sbatch", ".sh", ".yaml")):
            assert (ws.root / w).is_file(), f"{w} does not exist"
    r = subprocess.run(["bash", "-c", cmd.text], cwd=ws.root, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"{program}: {r.stderr[-3000:]}"
    printed = yaml.safe_load(r.stdout)
    assert printed["model"]["class_path"].startswith("sciformer."), r.stdout[:500]
    config = yaml.safe_load((ws.root / next(w for w in words if w.endswith(".yaml"))).read_text())
    strategy = [s["class_path"] if isinstance(s, dict) else s for s in (printed["trainer"]["strategy"],
                                                                          config["trainer"]["strategy"])]
    assert strategy[0] == strategy[1]  # the launchers keep the config's strategy (DDP or FSDP2)
    assert printed["trainer"]["num_nodes"] == (4 if program == "sbatch" else 2)


def _help(ws: Workspace, words: list[str], capsys) -> str:
    capsys.readouterr()
    ws.sciformer([*words, "--help"])
    return capsys.readouterr().out


@pytest.mark.parametrize("cmd", _select("help"))
def test_mentioned_command_has_help(cmd, ws, capsys):
    assert "sciformer" in _help(ws, shlex.split(cmd.text)[1:], capsys)


@pytest.mark.parametrize("cmd", _select("synopsis"))
def test_usage_line_matches_the_command(cmd, ws, capsys):
    """A usage line with placeholders: --help works, every flag exists and every listed alternative is accepted."""
    from sciformer.data.commands import CONVERTERS

    words = shlex.split(cmd.text)[1:]
    sub = [w for w in words[:2] if w in ("fit", "data", "info", "convert", "build", "sample", "export")]
    if words[0] == "data":
        sub = words[:2]
    text = _help(ws, sub, capsys)
    for i, w in enumerate(words):
        if w.startswith("-"):
            assert w in text, f"{cmd.text}: no flag {w} in `sciformer {' '.join(sub)} --help`"
        if "|" in w:
            choices = set(CONVERTERS) if words[i - 1] == "--from" else None
            for alt in w.split("|"):
                assert (alt in choices) if choices is not None else (alt in text), f"{cmd.text}: {alt!r} is not accepted"


@pytest.mark.parametrize("cmd", _select("covered"))
def test_command_is_covered_elsewhere(cmd):
    other = plan_of(cmd.text).reason
    if other.startswith("tests/"):
        assert (ROOT / other).is_file(), other
    words = shlex.split(cmd.text)
    if words[:2] == ["bash", "setup.sh"]:
        assert f"  {words[2]})" in (ROOT / "setup.sh").read_text(), f"setup.sh has no '{words[2]}' command"
    elif words[0] == "bash":
        assert (ROOT / words[1]).is_file()


@pytest.mark.parametrize("cmd", _select("skip"))
def test_command_not_run(cmd):
    words = shlex.split(cmd.text)
    if words[:2] == ["bash", "setup.sh"]:  # what can be checked without the network: the command exists
        assert f"  {words[2]})" in (ROOT / "setup.sh").read_text(), f"setup.sh has no '{words[2]}' command"
    pytest.skip(plan_of(cmd.text).reason)
