"""Remote-code export: a checkpoint that loads with trust_remote_code=True and no hazyzoo."""

from __future__ import annotations

import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers.dynamic_module_utils import get_imports, get_relative_import_files

import hazyzoo
from hazyzoo.remote_code import BUNDLE_HEADER, build_remote_code, write_remote_code

WORDS = "the a cat dog sat on mat red blue green is big small and ran to".split()
PROMPT_IDS = [[3, 4, 5, 6, 7, 3, 8], [9, 4, 12, 13, 4, 6, 3]]
PIPELINE_PROMPT = "the cat sat on"

# Prepended to a subprocess script: the import system behaves as if these were not installed.
HIDE_PACKAGES = """
import sys
HIDDEN = {hidden!r}
class _Hiding:
    def __init__(self, finder):
        self._finder = finder
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in HIDDEN:
            return None
        find = getattr(self._finder, "find_spec", None)
        return find(name, path, target) if find else None
    def find_distributions(self, *args, **kwargs):
        find = getattr(self._finder, "find_distributions", None)
        for dist in find(*args, **kwargs) if find else ():
            if (dist.metadata["Name"] or "").lower() not in HIDDEN:
                yield dist
    def __getattr__(self, name):
        return getattr(self._finder, name)
sys.meta_path[:] = [_Hiding(finder) for finder in sys.meta_path]
"""


def tiny_tokenizer():
    """A word-level tokenizer over :data:`WORDS`, trained offline (ids 0-2 are special)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(WORDS)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        pad_token="<pad>",
        eos_token="<eos>",
        bos_token="<eos>",
    )


def tiny_model() -> hazyzoo.BasedForCausalLM:
    """A random tiny BASED whose norms and biases are not at their init values."""
    torch.manual_seed(0)
    config = hazyzoo.BasedConfig.tiny(bos_token_id=1, eos_token_id=1, pad_token_id=0)
    model = hazyzoo.BasedForCausalLM(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


def save_tiny_checkpoint(directory: Path) -> hazyzoo.BasedForCausalLM:
    """Save :func:`tiny_model` and :func:`tiny_tokenizer` into ``directory``."""
    model = tiny_model()
    model.save_pretrained(directory)
    tiny_tokenizer().save_pretrained(directory)
    return model


def subprocess_env(tmp: Path) -> dict[str, str]:
    """Environment of a subprocess: offline, its own HF_MODULES_CACHE, no repository on the path."""
    env = dict(os.environ, HF_MODULES_CACHE=str(tmp / "hf_modules"), HF_HUB_OFFLINE="1")
    env.pop("PYTHONPATH", None)
    env.pop("TRITON_INTERPRET", None)
    return env


def run_script_ok(script: str, cwd: Path) -> None:
    """Run ``script`` in a fresh interpreter (offline, its own module cache, no repository on
    the path) and require it to exit 0 and print ``ok`` last."""
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=cwd,
        env=subprocess_env(cwd),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny checkpoint + tokenizer with remote code, and the in-process reference outputs."""
    root = tmp_path_factory.mktemp("remote")
    model = save_tiny_checkpoint(root / "ckpt")
    written = write_remote_code(root / "ckpt", model)
    ids = torch.tensor(PROMPT_IDS)
    with torch.no_grad():
        logits = model(ids).logits
    generated = model.generate(ids, max_new_tokens=6, do_sample=False)
    prompt = tiny_tokenizer()(PIPELINE_PROMPT, return_tensors="pt").input_ids
    piped = model.generate(prompt, max_new_tokens=3, min_new_tokens=3, do_sample=False)
    return root, model, written, logits, (generated, piped[0].tolist())


def test_bundle_is_flat_self_contained_and_needs_no_optional_package(exported):
    root, model, written, _, _ = exported
    ckpt = root / "ckpt"
    auto_map = json.loads((ckpt / "config.json").read_text())["auto_map"]
    assert auto_map == {
        "AutoConfig": "configuration_based.BasedConfig",
        "AutoModel": "modeling_based.BasedModel",
        "AutoModelForCausalLM": "modeling_based.BasedForCausalLM",
    }
    files = {p.name for p in written if p.suffix == ".py"}
    assert {p.name for p in ckpt.glob("*.py")} == files
    # transformers copies exactly the files the entry modules reach, and all of them exist.
    reached = {"modeling_based.py", "configuration_based.py"}
    for entry in ("modeling_based.py", "configuration_based.py"):
        reached |= {Path(f).name for f in get_relative_import_files(ckpt / entry)}
    assert reached == files
    for name in files:
        source = (ckpt / name).read_text()
        assert source.startswith(BUNDLE_HEADER)
        needed = set(get_imports(ckpt / name))  # what check_imports will require
        assert not needed & {"hazyzoo", "triton", "datasets", "evaluate", "lm_eval"}, name
        assert not re.search(r"^\s*(from|import)\s+hazyzoo\b", source, re.MULTILINE), name
    # Only modeling code: no command line, converters or data sets.
    bundled = set(build_remote_code(model).modules.values())
    assert not {m for m in bundled if m.split(".")[1] in ("cli", "conversion", "demo", "zoo")}
    assert not {m for m in bundled if m.startswith("hazyzoo.datasets_scripts")}
    assert {model.__module__, type(model.config).__module__} <= bundled


def test_bundle_names_follow_the_modules_and_carry_the_card_template(exported):
    _, model, _, _, _ = exported
    bundle = build_remote_code(model)
    # Each file is named after its module; clashing names get their parent folder's name.
    for file_name, module in bundle.modules.items():
        assert module.replace(".", "_").endswith(file_name[: -len(".py")]), (file_name, module)
    stems = [m.rsplit(".", 1)[-1] for m in bundle.modules.values()]
    for file_name, module in bundle.modules.items():
        if stems.count(module.rsplit(".", 1)[-1]) == 1:
            assert file_name == module.rsplit(".", 1)[-1] + ".py"
    hub_files = [f for f, m in bundle.modules.items() if m == "hazyzoo.hub"]
    if hub_files:  # hub.py is bundled (the model's save_pretrained writes a card)
        assert "A **BASED** language model" in bundle.files[hub_files[0]]


def test_loads_without_hazyzoo_or_triton_bit_exact(exported):
    root, _, _, logits, (generated, piped) = exported
    ckpt = root / "ckpt"
    torch.save({"logits": logits, "generated": generated}, root / "reference.pt")
    script = HIDE_PACKAGES.format(hidden=("hazyzoo", "triton")) + inspect.cleandoc(
        f"""
        import json, os
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, pipeline
        ckpt = {str(ckpt)!r}
        ref = torch.load({str(root / "reference.pt")!r})
        config = AutoConfig.from_pretrained(ckpt, trust_remote_code=True)
        assert type(config).__name__ == "BasedConfig", type(config)
        model = AutoModelForCausalLM.from_pretrained(ckpt, trust_remote_code=True).eval()
        ids = torch.tensor({PROMPT_IDS!r})
        with torch.no_grad():
            logits = model(ids).logits
        assert torch.equal(logits, ref["logits"]), (logits - ref["logits"]).abs().max()
        out = model.generate(ids, max_new_tokens=6, do_sample=False)
        assert torch.equal(out, ref["generated"]), out
        generator = pipeline("text-generation", model=ckpt, trust_remote_code=True)
        out = generator(
            {PIPELINE_PROMPT!r}, max_new_tokens=3, min_new_tokens=3, do_sample=False,
            return_tensors=True,
        )
        assert out[0]["generated_token_ids"] == {piped!r}, out
        text = generator({PIPELINE_PROMPT!r}, max_new_tokens=3, do_sample=False)
        assert text[0]["generated_text"].startswith({PIPELINE_PROMPT!r}), text
        # A remote-code model saves itself, card included, and reloads.
        model.save_pretrained(ckpt + "-resaved")
        assert "hazyzoo-card" in open(ckpt + "-resaved/README.md").read()
        again = AutoModelForCausalLM.from_pretrained(ckpt + "-resaved", trust_remote_code=True)
        with torch.no_grad():
            assert torch.equal(again(ids).logits, logits)
        # When the bundle carries the exporter (save_pretrained(remote_code=True) reaches it),
        # exporting again from the bundle gives the same files.
        if os.path.exists(os.path.join(ckpt, "remote_code.py")):
            model.save_pretrained(ckpt + "-reexported", remote_code=True)
            for name in sorted(os.listdir(ckpt)):
                if name.endswith(".py"):
                    mine = open(os.path.join(ckpt, name)).read()
                    theirs = open(os.path.join(ckpt + "-reexported", name)).read()
                    assert mine == theirs, name
            again = AutoModelForCausalLM.from_pretrained(
                ckpt + "-reexported", trust_remote_code=True
            )
            with torch.no_grad():
                assert torch.equal(again(ids).logits, logits)
        hidden = sorted(m for m in sys.modules if m.partition(".")[0] in HIDDEN)
        assert not hidden, hidden
        print("ok")
        """
    )
    run_script_ok(script, root)


def test_rewrite_marks_and_cleans_only_its_own_files(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path)
    (tmp_path / "stale.py").write_text(BUNDLE_HEADER + " from hazyzoo.gone\nx = 1\n")
    (tmp_path / "mine.py").write_text("print('a file the user wrote')\n")
    write_remote_code(tmp_path, model)
    assert not (tmp_path / "stale.py").exists()
    assert (tmp_path / "mine.py").read_text() == "print('a file the user wrote')\n"
    card = (tmp_path / "README.md").read_text()
    assert "trust_remote_code=True" in card  # the card was rewritten for remote code


def test_write_remote_code_from_a_config_alone(tmp_path):
    config = hazyzoo.BasedConfig.tiny()
    written = write_remote_code(tmp_path, config)
    assert (tmp_path / "config.json") in written
    assert "auto_map" in json.loads((tmp_path / "config.json").read_text())


def test_write_remote_code_rejects_what_it_cannot_bundle(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    with pytest.raises(TypeError, match="hazyzoo model or config"):
        write_remote_code(tmp_path, object())
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=11))
    with pytest.raises(ValueError, match="outside hazyzoo"):
        build_remote_code(gpt2)


class UserMixer(torch.nn.Module):
    """A layer defined outside hazyzoo (as a user's own registered mixer would be)."""

    def forward(self, hidden_states, **kwargs):
        return hidden_states


def test_models_with_classes_from_outside_hazyzoo_are_refused(tmp_path):
    model = tiny_model()
    model.model.layers[0].mixer = UserMixer()
    with pytest.raises(ValueError, match="UserMixer from tests.test_remote_code"):
        write_remote_code(tmp_path, model)
    assert not list(tmp_path.iterdir())  # nothing written


def test_user_python_files_are_never_replaced(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path)
    (tmp_path / "modeling_based.py").write_text("# my own code\n")
    with pytest.raises(FileExistsError, match="modeling_based.py"):
        write_remote_code(tmp_path, model)
    assert (tmp_path / "modeling_based.py").read_text() == "# my own code\n"


def _save_pretrained_accepts_remote_code() -> bool:
    return "remote_code" in inspect.signature(hazyzoo.BasedForCausalLM.save_pretrained).parameters


@pytest.mark.skipif(
    not _save_pretrained_accepts_remote_code(), reason="save_pretrained(remote_code=) not there yet"
)
def test_save_pretrained_remote_code_writes_the_bundle(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path, remote_code=True)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_based.BasedForCausalLM"
    assert (tmp_path / "modeling_based.py").read_text().startswith(BUNDLE_HEADER)
    assert "trust_remote_code=True" in (tmp_path / "README.md").read_text()


OTHER_CAUSAL_LMS = [t for t in sorted(hazyzoo.CAUSAL_LM_REGISTRY) if t != "hazyzoo_based"]


@pytest.mark.slow  # ~8 s per model in a fresh process; BASED's own test runs by default
@pytest.mark.parametrize("model_type", OTHER_CAUSAL_LMS)
def test_every_zoo_causal_lm_loads_without_hazyzoo_or_triton(model_type, tmp_path):
    """The bundle is found by walking imports, so every registered LM exports (BASED is tested
    in depth above): same logits and greedy tokens without hazyzoo or triton importable."""
    from tests.modeling.zoo_models import make_model, random_ids

    model = make_model(model_type)
    ckpt = tmp_path / "ckpt"
    model.save_pretrained(ckpt, remote_code=True)
    ids = random_ids(model, 2, 9)
    with torch.no_grad():
        logits = model(ids).logits
    generated = model.generate(ids, max_new_tokens=5, do_sample=False, pad_token_id=0)
    torch.save({"ids": ids, "logits": logits, "generated": generated}, tmp_path / "ref.pt")
    script = HIDE_PACKAGES.format(hidden=("hazyzoo", "triton")) + inspect.cleandoc(
        f"""
        import torch
        from transformers import AutoModelForCausalLM
        ref = torch.load({str(tmp_path / "ref.pt")!r})
        model = AutoModelForCausalLM.from_pretrained({str(ckpt)!r}, trust_remote_code=True)
        model.eval()
        assert type(model).__name__ == {type(model).__name__!r}, type(model)
        with torch.no_grad():
            logits = model(ref["ids"]).logits
        assert torch.equal(logits, ref["logits"]), (logits - ref["logits"]).abs().max()
        out = model.generate(ref["ids"], max_new_tokens=5, do_sample=False, pad_token_id=0)
        assert torch.equal(out, ref["generated"]), out
        print("ok")
        """
    )
    run_script_ok(script, tmp_path)


@pytest.mark.parametrize("model_type", sorted(hazyzoo.ENCODER_REGISTRY))
def test_every_zoo_encoder_loads_without_hazyzoo_or_triton(model_type, tmp_path):
    """Encoders export too: the head and the base model load with trust_remote_code=True where
    neither hazyzoo nor triton can be imported, and give the same outputs."""
    from transformers import AutoModel

    from tests.modeling.test_model_contract import head_auto_class
    from tests.modeling.zoo_models import main_output, make_model

    model = make_model(model_type)
    ckpt = tmp_path / "ckpt"
    model.save_pretrained(ckpt, remote_code=True)
    inputs = model.example_inputs(2, 9, seed=4)
    with torch.no_grad():
        out = main_output(model(**inputs))
        base = AutoModel.from_pretrained(ckpt).eval()
        hidden = base(**inputs).last_hidden_state
    torch.save({"inputs": inputs, "out": out, "hidden": hidden}, tmp_path / "ref.pt")
    auto = head_auto_class(model).__name__
    script = HIDE_PACKAGES.format(hidden=("hazyzoo", "triton")) + inspect.cleandoc(
        f"""
        import torch
        import transformers
        ref = torch.load({str(tmp_path / "ref.pt")!r})
        head = getattr(transformers, {auto!r}).from_pretrained({str(ckpt)!r}, trust_remote_code=True)
        assert type(head).__name__ == {type(model).__name__!r}, type(head)
        base = transformers.AutoModel.from_pretrained({str(ckpt)!r}, trust_remote_code=True)
        with torch.no_grad():
            out = head.eval()(**ref["inputs"]).to_tuple()[0]
            hidden = base.eval()(**ref["inputs"]).last_hidden_state
        # (bit-equal weights; CPU kernels may round the last bit by the tensors' alignment)
        torch.testing.assert_close(out, ref["out"], atol=1e-6, rtol=0)
        torch.testing.assert_close(hidden, ref["hidden"], atol=1e-6, rtol=0)
        print("ok")
        """
    )
    run_script_ok(script, tmp_path)
