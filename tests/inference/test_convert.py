"""`vamba convert`: a checkpoint written by the official code (tests/fixtures/official_tiny) and a plain Qwen2-VL
become vamba-typed checkpoints with their processor; transformers' Auto classes then load the right classes, with
logits identical to loading the source directly."""
from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import (
    AutoModelForImageTextToText,
    AutoProcessor,
    PreTrainedTokenizerFast,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
)

import vamba.models  # noqa: F401  (registers the Auto classes)
from tests.models.vamba_tiny import TEXT, VISION
from vamba.cli import main as vamba_main
from vamba.data.processor import VambaProcessor
from vamba.data.tiny_tokenizer import build_tiny_tokenizer
from vamba.inference.convert import ConversionError, convert
from vamba.models import VambaForConditionalGeneration

ROOT = Path(__file__).resolve().parents[2]


def official_fixture() -> Path:
    """tests/fixtures/official_tiny, or the shared copy beside the repository."""
    for path in (ROOT / "tests" / "fixtures" / "official_tiny", ROOT.parent / "shared" / "fixtures" / "official_tiny",
                 Path("/work/shared/fixtures/official_tiny")):
        if (path / "model.safetensors").exists():
            return path
    pytest.fail("the official_tiny fixture is missing (tests/fixtures/official_tiny)")


def fixture_tokenizer(path: Path) -> Path:
    """A word-level tokenizer with the fixture's ids (README: 500 <|vision_start|>, 501 <|vision_end|>, 502 video
    pad, 503 image pad, 510 eos, 511 pad): the official checkpoint ships none."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    special = {500: "<|vision_start|>", 501: "<|vision_end|>", 502: "<|video_pad|>", 503: "<|image_pad|>",
               504: "<|im_start|>", 505: "<|vision_pad|>", 510: "<|im_end|>", 511: "<|endoftext|>"}
    vocab = {special.get(i, f"w{i}"): i for i in range(512)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   additional_special_tokens=[t for i, t in special.items() if i < 510])
    fast.save_pretrained(str(path))
    return path


@pytest.fixture(scope="module")
def released(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the official checkpoint (config.json qwen2_vl + vision_mamba_mixer_config, no tokenizer)."""
    path = tmp_path_factory.mktemp("released") / "official_tiny"
    path.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(official_fixture() / name, path / name)
    return path


def test_released_checkpoint_converts_and_auto_classes_load_it(released: Path, tmp_path: Path, capsys) -> None:
    tokenizer = fixture_tokenizer(tmp_path / "tok")
    dst = tmp_path / "vamba-tiny"
    assert vamba_main(["convert", f"src={released}", f"out={dst}", f"tokenizer={tokenizer}", "num_frames=16",
                       "max_pixels=50176"]) == 0
    # the settings given are said (it printed "defaults" alone although they were applied)
    assert "processor settings: defaults (no processor file in SRC), overridden by max_pixels=50176, num_frames=16" \
        in capsys.readouterr().out
    assert json.loads((dst / "config.json").read_text())["model_type"] == "vamba"
    assert not list(tmp_path.glob(".vamba-tiny.*"))  # no temporary folder left behind
    model = AutoModelForImageTextToText.from_pretrained(dst, dtype=torch.float32).eval()
    assert isinstance(model, VambaForConditionalGeneration)
    processor = AutoProcessor.from_pretrained(dst)
    assert isinstance(processor, VambaProcessor)
    assert processor.frame_sampling().num_frames == 16 and processor.vision_config().max_pixels == 50176
    assert processor.tokenizer.convert_tokens_to_ids("<|vision_start|>") == model.config.vision_start_token_id

    io = load_file(str(official_fixture() / "io.safetensors"))
    inputs = {k: io[k] for k in ("input_ids", "pixel_values_videos", "video_grid_thw")}
    source = VambaForConditionalGeneration.from_pretrained(released, dtype=torch.float32).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).logits, source(**inputs).logits, rtol=0, atol=0)


def test_refusals(released: Path, tmp_path: Path, capsys) -> None:
    dst = tmp_path / "out"
    with pytest.raises(ConversionError, match="no tokenizer files.*tokenizer=PATH"):
        convert(released, dst)
    assert not dst.exists() and not list(tmp_path.glob(".out.*"))
    assert vamba_main(["convert", str(released), str(dst)]) == 2
    assert "pass tokenizer=PATH" in capsys.readouterr().err

    wrong = tmp_path / "wrong-tok"  # ids of another model
    build_tiny_tokenizer(wrong)
    with pytest.raises(ConversionError, match="<|vision_start|> = 3, the model's config.json vision_start_token_id "
                                              "= 500"):
        convert(released, dst, tokenizer=wrong)
    assert not dst.exists()

    dst.mkdir()
    (dst / "keep.txt").write_text("mine")
    tokenizer = fixture_tokenizer(tmp_path / "tok")
    with pytest.raises(ConversionError, match="exists; pass overwrite=true"):
        convert(released, dst, tokenizer=tokenizer)
    assert (dst / "keep.txt").read_text() == "mine"
    with pytest.raises(ConversionError, match="refuses to replace .*not look like a converted VAMBA checkpoint.*keep.txt"):
        convert(released, dst, tokenizer=tokenizer, overwrite=True)  # a folder of the user's, not a checkpoint
    assert (dst / "keep.txt").read_text() == "mine"
    (dst / "keep.txt").unlink()
    convert(released, dst, tokenizer=tokenizer, overwrite=True)  # an empty folder: nothing to lose
    (dst / "stale.txt").write_text("from the older conversion")
    convert(released, dst, tokenizer=tokenizer, overwrite=True)  # a checkpoint of ours: replaced whole
    assert not (dst / "stale.txt").exists() and (dst / "processor_config.json").exists()
    assert not list(tmp_path.glob(".out.*"))
    with pytest.raises(ConversionError, match="not a checkpoint directory"):
        convert(tmp_path / "nowhere", tmp_path / "x")


def test_qwen2_vl_checkpoint_converts_with_its_processor_settings(tmp_path: Path) -> None:
    """A plain Qwen2-VL (transformers' own class) with its tokenizer and preprocessor_config.json: cross-attention
    from self-attention, the pixel limits from its preprocessor_config.json."""
    from transformers import Qwen2VLImageProcessorPil

    src = tmp_path / "qwen2vl"
    tok = build_tiny_tokenizer(src)
    ids = {k: tok.convert_tokens_to_ids(t) for k, t in (("vision_start_token_id", "<|vision_start|>"),
                                                        ("vision_end_token_id", "<|vision_end|>"))}
    torch.manual_seed(0)
    Qwen2VLForConditionalGeneration(Qwen2VLConfig(text_config=dict(TEXT, vocab_size=len(tok)),
                                                  vision_config=dict(VISION), **ids)).save_pretrained(src)
    Qwen2VLImageProcessorPil(min_pixels=3136, max_pixels=12845056).save_pretrained(src)
    done = convert(src, tmp_path / "vamba", dtype="float32")
    assert done.kind == "qwen2_vl" and done.settings.endswith("preprocessor_config.json")
    model = AutoModelForImageTextToText.from_pretrained(done.path)
    layer = model.model.layers[0]
    torch.testing.assert_close(layer.cross_attn.q_proj.weight, layer.self_attn.q_proj.weight, rtol=0, atol=0)
    vision = AutoProcessor.from_pretrained(done.path).vision_config()
    assert (vision.min_pixels, vision.max_pixels) == (3136, 12845056)


def test_overwrite_never_deletes_the_source_nor_a_folder_that_is_not_a_checkpoint(released: Path, tmp_path: Path,
                                                                                     capsys) -> None:
    """Issue 28 item 2: DST a parent of SRC (or SRC itself) with --overwrite deleted SRC, then printed a path that no
    longer existed; DST a user's folder was replaced whole."""
    home = tmp_path / "home"
    src = home / "ckpt"
    shutil.copytree(released, src)
    tokenizer = fixture_tokenizer(tmp_path / "tok")
    (home / "thesis.tex").write_text("mine")
    before = sorted(p.name for p in src.iterdir())
    for dst in (home, src, src / "vamba", tokenizer):
        assert vamba_main(["convert", str(src), str(dst), "--tokenizer", str(tokenizer), "--overwrite"]) == 2
        assert "one holds the other" in capsys.readouterr().err
    assert sorted(p.name for p in src.iterdir()) == before and (home / "thesis.tex").read_text() == "mine"
    assert not (src / "vamba").exists() and not list(home.glob(".*"))
    assert vamba_main(["convert", str(src), str(tmp_path / "data"), "--tokenizer", str(tokenizer)]) == 0
    capsys.readouterr()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text('{"model_type": "llama"}')
    assert vamba_main(["convert", str(src), str(tmp_path / "other"), "--tokenizer", str(tokenizer), "--overwrite"]) == 2
    assert "refuses to replace" in capsys.readouterr().err and (tmp_path / "other" / "config.json").exists()


def test_the_converted_folder_follows_the_umask(released: Path, tmp_path: Path) -> None:
    """mkdtemp makes 0700 folders: a converted checkpoint was private whatever the umask (a shared group lost it)."""
    old = os.umask(0o022)
    try:
        dst = tmp_path / "out"
        convert(released, dst, tokenizer=fixture_tokenizer(tmp_path / "tok"))
    finally:
        os.umask(old)
    assert stat.S_IMODE(dst.stat().st_mode) == 0o755
