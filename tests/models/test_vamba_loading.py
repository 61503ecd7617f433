"""Loading: Qwen2-VL checkpoints (5.x and 4.x layouts), our own round trip, the released VAMBA layout, errors."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForImageTextToText, Qwen2VLForConditionalGeneration

from tests.models.vamba_tiny import (
    MAMBA,
    TEXT,
    VISION,
    qwen2_vl_model,
    save_qwen2_vl_4x,
    save_qwen2_vl_5x,
    vamba_config,
    video_batch,
)
from vamba.models import IncompatibleCheckpointError, VambaForConditionalGeneration
from vamba.models.loading import ensure_plain_qwen2_vl
from vamba.training.build import load_teacher

OFFICIAL_FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "official_tiny"


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    model = qwen2_vl_model()
    root = tmp_path_factory.mktemp("qwen")
    model.save_pretrained(root / "hf")  # whatever layout the installed transformers writes
    save_qwen2_vl_5x(model, root / "v5")
    save_qwen2_vl_4x(model, root / "v4")
    return model, root


def _text_logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits


@pytest.mark.parametrize("layout", ["v5", "v4", "hf"])
def test_qwen2_vl_checkpoint_converts_and_keeps_the_text_path(qwen, layout):
    source, root = qwen
    model = VambaForConditionalGeneration.from_pretrained(root / layout, vision_mamba_mixer_config=MAMBA).eval()
    # Every Qwen2-VL weight copied.
    ours = model.state_dict()
    for key, value in source.state_dict().items():
        key = key.replace("model.language_model.", "model.").replace("model.visual.", "visual.")
        torch.testing.assert_close(ours[key], value, rtol=0, atol=0, msg=key)
    for layer in model.model.layers:
        for name, p in layer.self_attn.named_parameters():  # cross-attention starts as a copy of self-attention
            torch.testing.assert_close(dict(layer.cross_attn.named_parameters())[name], p, rtol=0, atol=0)
        assert layer.alpha.item() == 0.5
        assert torch.all(layer.vision_mixer.mixer.D == 1)  # Mamba-2 block got its own init, not N(0, 0.02)
    ids = torch.randint(3, TEXT["vocab_size"], (2, 9))
    with torch.no_grad():
        for layer in model.model.layers:
            layer.alpha.fill_(1.0)
    # With alpha = 1 the text path is exactly Qwen2-VL's, with or without a video in the batch.
    expected = _text_logits(source, ids)
    torch.testing.assert_close(_text_logits(model, ids), expected, rtol=1e-5, atol=1e-5)
    batch = video_batch([9, 9], [[(2, 4, 4)], [(1, 2, 2)]])
    batch["input_ids"] = ids
    with torch.no_grad():
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)


def test_random_cross_attention_init_is_not_a_copy(qwen):
    _, root = qwen
    model = VambaForConditionalGeneration.from_pretrained(root / "v5", vision_mamba_mixer_config=MAMBA,
                                                          cross_attn_init="random")
    layer = model.model.layers[0]
    assert not torch.equal(layer.cross_attn.q_proj.weight, layer.self_attn.q_proj.weight)
    assert layer.cross_attn.q_proj.weight.std() < 0.05  # initializer_range 0.02, not left uninitialised


def test_save_load_round_trip_and_auto_class(tmp_path):
    torch.manual_seed(0)
    model = VambaForConditionalGeneration(vamba_config()).eval()
    model.save_pretrained(tmp_path, max_shard_size="100KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "vamba" and config["vision_mamba_mixer_config"]["d_state"] == MAMBA["d_state"]
    for loader in (VambaForConditionalGeneration, AutoModelForImageTextToText):
        loaded = loader.from_pretrained(tmp_path).eval()
        assert type(loaded) is VambaForConditionalGeneration
        for key, value in model.state_dict().items():
            torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0, msg=key)
    batch = video_batch([7, 5], [[(2, 4, 4)], [(1, 4, 2)]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).loss, model(**batch).loss)


def _released_config() -> dict:
    """config.json as the released checkpoint writes it: 4.x flat Qwen2-VL keys + VAMBA additions."""
    text = {k: v for k, v in TEXT.items() if k != "rope_parameters"}
    mixer = {"enable": True, "hidden_dim": TEXT["hidden_size"], "norm_type": "rmsnorm", "residual_in_fp32": False,
             "d_state": MAMBA["d_state"], "d_conv": 4, "conv_init": None, "expand": 2, "headdim": MAMBA["headdim"],
             "d_ssm": None, "ngroups": 1, "A_init_range": [1, 16], "D_has_hdim": False, "rmsnorm": True,
             "norm_before_gate": False, "dt_min": 0.001, "dt_max": 0.1, "dt_init_floor": 0.0001,
             "dt_limit": [0.0, float("inf")], "bias": False, "conv_bias": True, "chunk_size": MAMBA["chunk_size"],
             "use_mem_eff_path": True, "process_group": None, "sequence_parallel": True,
             "rescale_prenorm_residual": True, "model_type": "qwen2_vl"}
    return {"architectures": ["Qwen2VLForConditionalGeneration"], "model_type": "qwen2_vl", **text,
            "rope_theta": 10000.0, "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]},
            "vision_config": {**VISION, "model_type": "qwen2_vl"}, "vision_mamba_mixer_config": mixer,
            "use_alpha_balancing": True, "cross_attn_use_position_embeddings": False,
            "cross_attn_use_layer_norm": False, "distill_coeff": 0.0, "torch_dtype": "bfloat16",
            "transformers_version": "4.44.0"}


def test_released_vamba_layout_loads_directly(tmp_path):
    torch.manual_seed(0)
    model = VambaForConditionalGeneration(vamba_config()).eval()
    with torch.no_grad():
        for i, layer in enumerate(model.model.layers):
            layer.alpha.fill_(0.3 + 0.2 * i)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    # The released key names, spelled out: our module tree is that layout.
    for key in ("model.layers.1.cross_attn.q_proj.weight", "model.layers.1.alpha",
                "model.layers.1.vision_mixer.norm.weight", "model.layers.1.vision_mixer.mixer.A_log",
                "model.layers.1.vision_mixer.mixer.conv1d.bias",
                "visual.merger.mlp.0.weight", "model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"):
        assert key in state, key
    save_file(state, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    (tmp_path / "config.json").write_text(json.dumps(_released_config()))
    loaded = VambaForConditionalGeneration.from_pretrained(tmp_path, dtype=torch.float32).eval()
    assert loaded.config.model_type == "vamba" and loaded.config.use_alpha_balancing
    batch = video_batch([6, 8], [[(2, 4, 4)], [(1, 2, 4), (1, 2, 2)]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).loss, model(**batch).loss, rtol=0, atol=0)
    assert loaded.model.layers[1].alpha.item() == pytest.approx(0.5)


def _broken_copy(tmp_path, src, edit):
    tmp_path.mkdir()
    (tmp_path / "config.json").write_text((src / "config.json").read_text())
    state = load_file(str(src / "model.safetensors"))
    edit(state)
    save_file(state, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    return tmp_path


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("saved")
    torch.manual_seed(0)
    VambaForConditionalGeneration(vamba_config()).save_pretrained(path)
    return path


def test_missing_key_is_an_error_naming_it(saved, tmp_path):
    path = _broken_copy(tmp_path / "c", saved, lambda s: s.pop("model.layers.1.vision_mixer.mixer.A_log"))
    with pytest.raises(IncompatibleCheckpointError,
                       match=r"missing keys: model\.layers\.1\.vision_mixer\.mixer\.A_log"):
        VambaForConditionalGeneration.from_pretrained(path)


def test_unexpected_key_is_an_error_naming_it(saved, tmp_path):
    path = _broken_copy(tmp_path / "c", saved, lambda s: s.update({"model.layers.0.extra.weight": torch.zeros(2)}))
    with pytest.raises(IncompatibleCheckpointError, match=r"unexpected keys: model\.layers\.0\.extra\.weight"):
        VambaForConditionalGeneration.from_pretrained(path)


def test_shape_mismatch_is_an_error(saved, tmp_path):
    path = _broken_copy(tmp_path / "c", saved, lambda s: s.update({"model.layers.0.alpha": torch.zeros(3)}))
    with pytest.raises((IncompatibleCheckpointError, RuntimeError), match=r"model\.layers\.0\.alpha"):
        VambaForConditionalGeneration.from_pretrained(path)


def _qwen2_vl_without_a_k_proj(root: Path, path: Path) -> Path:
    """The 5.x-layout Qwen2-VL checkpoint with layer 0's self-attention k_proj weight removed."""
    path.mkdir()
    (path / "config.json").write_text((root / "v5" / "config.json").read_text())
    state = load_file(str(root / "v5" / "model.safetensors"))
    state.pop("model.language_model.layers.0.self_attn.k_proj.weight")
    save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
    return path


def test_qwen2_vl_checkpoint_missing_a_source_weight_is_an_error(qwen, tmp_path):
    path = _qwen2_vl_without_a_k_proj(qwen[1], tmp_path / "q")
    with pytest.raises(IncompatibleCheckpointError, match=r"model\.layers\.0\.self_attn\.k_proj\.weight"):
        VambaForConditionalGeneration.from_pretrained(path, vision_mamba_mixer_config=MAMBA)


def test_other_model_types_are_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(IncompatibleCheckpointError, match="model_type 'llama'"):
        VambaForConditionalGeneration.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="nowhere: not a checkpoint directory"):
        VambaForConditionalGeneration.from_pretrained(tmp_path / "nowhere")
    (tmp_path / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        VambaForConditionalGeneration.from_pretrained(tmp_path)


def test_truncated_weights_file_is_an_error_naming_it(saved, tmp_path):
    path = tmp_path / "cut"
    path.mkdir()
    (path / "config.json").write_text((saved / "config.json").read_text())
    data = (saved / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[: len(data) - 100])  # as a copy or a save cut short leaves it
    with pytest.raises(ValueError, match=f"{path / 'model.safetensors'} is truncated"):
        VambaForConditionalGeneration.from_pretrained(path)


def test_transformers_would_build_plain_qwen2_vl_from_a_released_checkpoint():
    """Why the guard below exists: the released layout says model_type qwen2_vl, and transformers' Auto class
    builds plain Qwen2-VL from it, dropping every VAMBA weight (the only signal is a load report)."""
    model, info = AutoModelForImageTextToText.from_pretrained(OFFICIAL_FIXTURE, output_loading_info=True)
    assert type(model) is Qwen2VLForConditionalGeneration
    assert any(".cross_attn." in k for k in info["unexpected_keys"])


@pytest.mark.parametrize("which", ["released", "ours", "weights only"])
def test_a_vamba_checkpoint_where_plain_qwen2_vl_is_expected_is_an_error(saved, tmp_path, which):
    if which == "released":
        path, reason = OFFICIAL_FIXTURE, "config.json has vision_mamba_mixer_config"
    elif which == "ours":
        path, reason = saved, "config.json has model_type 'vamba'"
    else:  # a qwen2_vl config without the VAMBA section, beside VAMBA weights
        path = tmp_path
        config = json.loads((OFFICIAL_FIXTURE / "config.json").read_text())
        config.pop("vision_mamba_mixer_config")
        (path / "config.json").write_text(json.dumps(config))
        (path / "model.safetensors").symlink_to(OFFICIAL_FIXTURE / "model.safetensors")
        reason = r"it holds VAMBA weights \(model\.layers\.0\.cross_attn\."
    with pytest.raises(IncompatibleCheckpointError,
                       match=f"is a VAMBA checkpoint \\({reason}.*VambaForConditionalGeneration.from_pretrained.*"
                             f"`vamba convert`"):
        load_teacher(str(path))
    with pytest.raises(IncompatibleCheckpointError, match="is a VAMBA checkpoint"):
        ensure_plain_qwen2_vl(path)


def test_the_teacher_loader_still_loads_plain_qwen2_vl(qwen):
    source, root = qwen
    ensure_plain_qwen2_vl(root / "v4")  # sharded, 4.x keys: checked through the index
    teacher = load_teacher(str(root / "hf"))
    assert type(teacher) is Qwen2VLForConditionalGeneration and not teacher.training
    ids = torch.randint(3, 90, (1, 6))
    torch.testing.assert_close(_text_logits(teacher, ids), _text_logits(source, ids), rtol=0, atol=0)


@pytest.mark.parametrize("where", ["top", "text_config", "vision_config", "ours"])
def test_an_unknown_model_key_in_config_json_is_an_error_naming_it(saved, tmp_path, where):
    """A misspelt model option (not a generic PretrainedConfig key of any transformers version) fails loading
    instead of being kept as an unused attribute: in the released layout (the official fixture, 4.x form), in
    its nested vision config, in our own saved checkpoints."""
    source = OFFICIAL_FIXTURE if where != "ours" else saved
    path = tmp_path / "ckpt"
    path.mkdir()
    config = json.loads((source / "config.json").read_text())
    if where == "text_config":
        config["text_config"] = {**config.get("text_config", {}), "hidden_sizee": 8}
        bad = "text_config.hidden_sizee"
    elif where == "vision_config":
        config["vision_config"]["patch_sise"] = 14
        bad = "vision_config.patch_sise"
    else:
        config["cross_attn_use_layernorm"] = True
        bad = "cross_attn_use_layernorm"
    (path / "config.json").write_text(json.dumps(config))
    (path / "model.safetensors").symlink_to(source / "model.safetensors")
    with pytest.raises(ValueError, match=bad):
        VambaForConditionalGeneration.from_pretrained(path)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def transformers_log():
    """What transformers' loader logs (its library logger does not propagate to pytest's caplog)."""
    handler = _Records()
    log = logging.getLogger("transformers.modeling_utils")
    log.addHandler(handler)
    yield handler.messages
    log.removeHandler(handler)


def test_converting_qwen2_vl_prints_one_summary_line_not_the_missing_table(qwen, transformers_log, caplog):
    """transformers logged a LOAD REPORT table with every new cross-attention and Mamba-2 tensor as MISSING (all
    expected when converting); one line of ours says what was loaded and initialised instead."""
    from vamba.models.loading import NEW_MODULE_KEYS

    _, root = qwen
    with caplog.at_level("INFO", logger="vamba"):
        model = VambaForConditionalGeneration.from_pretrained(root / "v5", vision_mamba_mixer_config=MAMBA)
    assert not [m for m in transformers_log if "LOAD REPORT" in m], transformers_log
    keys = load_file(str(root / "v5" / "model.safetensors")).keys()
    new = [k for k in model.state_dict() if NEW_MODULE_KEYS.search(k)]
    cross = sum(".cross_attn." in k for k in new)
    mamba = sum(".vision_mixer." in k for k in new)
    assert cross and mamba
    assert (f"loaded {len(keys)} tensors; initialised {len(new)} new (cross_attn from self_attn: {cross}, "
            f"mamba: {mamba}, alpha: {len(new) - cross - mamba}); unexpected 0") in caplog.text


def test_a_key_missing_beyond_the_new_modules_keeps_transformers_table(qwen, tmp_path, transformers_log):
    path = _qwen2_vl_without_a_k_proj(qwen[1], tmp_path / "q")
    with pytest.raises(IncompatibleCheckpointError, match=r"model\.layers\.0\.self_attn\.k_proj\.weight"):
        VambaForConditionalGeneration.from_pretrained(path, vision_mamba_mixer_config=MAMBA)
    table = [m for m in transformers_log if "LOAD REPORT" in m]
    assert table and "layers.0.self_attn.k_proj" in table[0] and "MISSING" in table[0], transformers_log
