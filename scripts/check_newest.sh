#!/usr/bin/env bash
# The newest releases checked on purpose: a throwaway venv with the newest release of every dependency (the upper
# bounds of pyproject.toml lifted; torch stays at $TORCH, the CPU build), then the tests that touch those packages'
# interfaces (processor and Auto classes, conversion, Mamba-2 parity against transformers, checkpoint loading, Trainer
# resume, DeepSpeed ZeRO on CPU). Prints what moved and what broke; exit 0 only when every test passed.
# Does not gate CI. Run it with every change of dependencies and at least weekly; when it passes, raise the bounds in
# pyproject.toml and regenerate the lock (bash scripts/deps/lock.sh) -- docs/install.md.
#   bash scripts/check_newest.sh                 # ~2 min install + ~4 min of tests on 2 cores
#   bash scripts/check_newest.sh transformers    # lift only these packages' bounds; the rest as locked
set -uo pipefail
cd "$(dirname "$0")/.."
TORCH=${TORCH:-2.13.0}
tmp=$(mktemp -d) && trap 'rm -rf "$tmp"' EXIT
python3 -m venv "$tmp/venv" && . "$tmp/venv/bin/activate"
pipq() { pip install -q "$@" 2> >(grep -v "^WARNING: Location" >&2); }  # this machine's mirror config is noisy
pipq "torch==$TORCH" || exit 2
python3 - "$@" > "$tmp/requirements.txt" <<'PY'
"""Every requirement of pyproject (dependencies + dev + train extras), upper bounds lifted for the packages named on
the command line (all when none); the others pinned as in the lock."""
import re, sys, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
lock = dict(re.match(r"([A-Za-z0-9_.-]+)==(\S+)", line).groups()
            for line in open("scripts/deps/constraints-cpu.txt") if re.match(r"[A-Za-z0-9_.-]+==", line))
norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()
lock = {norm(k): v for k, v in lock.items()}
lift = {norm(n) for n in sys.argv[1:]}
for req in project["dependencies"] + project["optional-dependencies"]["dev"] + project["optional-dependencies"]["train"]:
    name, marker = re.match(r"([A-Za-z0-9_.-]+)", req).group(1), (";" + req.split(";", 1)[1]) if ";" in req else ""
    if norm(name) == "torch":
        continue
    if not lift or norm(name) in lift:
        print(name + marker)  # newest release
    elif norm(name) in lock:
        print(f"{name}=={lock[norm(name)]}{marker}")
    else:
        print(req)
PY
pipq --upgrade -r "$tmp/requirements.txt" || { echo "check_newest: the newest releases do not install together"; exit 2; }
pipq --no-deps -e . || exit 2
echo "== versions (locked -> now)"
python3 - <<'PY'
import re
from importlib.metadata import version, PackageNotFoundError
lock = {m.group(1).lower(): m.group(2) for line in open("scripts/deps/constraints-cpu.txt")
        if (m := re.match(r"([A-Za-z0-9_.-]+)==(\S+)", line))}
for name in ("transformers", "huggingface-hub", "accelerate", "datasets", "hydra-core", "deepspeed", "peft", "tokenizers",
             "safetensors", "torch"):
    try:
        now = version(name)
    except PackageNotFoundError:
        now = "absent"
    newer = now.split("+")[0] != lock.get(name)  # a local label (torch's +cpu) is the same release
    print(f"  {name:16} {lock.get(name, '?'):>12} -> {now}{'   (newer)' if newer else ''}")
PY
echo "== interface tests"
HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=disabled python3 -m pytest -q -p no:cacheprovider \
    tests/data/test_processor.py tests/inference/test_convert.py tests/inference/test_processor_generate.py \
    tests/models/test_mamba2.py tests/models/test_vamba_transformers_inputs.py tests/models/test_vamba_loading.py \
    tests/models/test_official_fixture.py tests/models/test_zero3_init.py tests/training/test_resume.py \
    tests/training/test_train.py tests/test_repo.py 2>&1 | tee "$tmp/pytest.log" | tail -n 40
rc=${PIPESTATUS[0]}
if [ "$rc" -eq 0 ]; then
    echo "check_newest: PASSED with the versions above: raise the bounds in pyproject.toml, then bash scripts/deps/lock.sh"
else
    echo "check_newest: BROKEN by the versions above (failures listed before); keep the bounds until fixed"
fi
exit "$rc"
