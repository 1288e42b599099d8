"""Generation: cached decoding equals full forward passes, greedy tokens equal transformers', samplers
keep their promises, streaming matches generate, and the high-level pipeline works end to end."""

from __future__ import annotations

import pytest
import torch
from hf_checkpoints import load_hf_model, make_hf_model, make_inputs, save_hf_checkpoint
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tiny_tokenizer import make_tiny_checkpoint

import vlmzoo
from vlmzoo.generation import Greedy, KVCache, MinP, RepetitionPenalty, Sampler, Temperature, TopK, TopP


def perturbed(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * 0.05)
    return model


@st.composite
def small_configs(draw):
    family = draw(st.sampled_from(["gemma", "gemma2"]))
    heads = draw(st.sampled_from([2, 4]))
    kv_heads = draw(st.sampled_from([h for h in (1, 2, 4) if heads % h == 0]))
    layers = draw(st.integers(1, 3))
    vocab = draw(st.integers(48, 96))
    decoder = dict(
        block=family,
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=48,
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=8,
        attention=draw(st.sampled_from(["sdpa", "eager"])),
    )
    if family == "gemma2":
        decoder.update(
            query_pre_attn_scalar=8,
            attn_logit_softcap=draw(st.sampled_from([None, 5.0])),
            final_logit_softcap=draw(st.sampled_from([None, 3.0])),
            sliding_window=draw(st.integers(2, 12)),  # shorter than the run, usually
        )
    vision = vlmzoo.VisionConfig(image_size=28, patch_size=14, hidden_size=16, intermediate_size=24, num_layers=1,
                                 num_heads=2)  # fmt: skip
    return vlmzoo.PaliGemmaConfig(
        vision=vision,
        projector=vlmzoo.ProjectorConfig(input_size=16, output_size=32),
        decoder=vlmzoo.DecoderConfig(**decoder),
        image_token_id=vocab - 1,
    )


class NoImageToken(Greedy):
    def __init__(self, config) -> None:
        self.image_token_id = config.image_token_id

    def warp(self, logits, history):
        return logits.index_fill(-1, torch.tensor([self.image_token_id]), float("-inf"))


def text_only_inputs(config, batch: int, length: int, seed: int) -> dict[str, torch.Tensor]:
    """Prompts of ``length`` text tokens and no image (``length`` 1 is a lone token: a one-column prefill)."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, config.decoder.vocab_size - 1, (batch, length), generator=generator)
    ones = torch.ones_like(ids)
    return {"input_ids": ids, "attention_mask": ones, "token_type_ids": torch.zeros_like(ids)}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    config=small_configs(),
    batch=st.integers(1, 3),
    new_tokens=st.integers(1, 8),
    text_only=st.sampled_from([None, 1, 2, 3]),
    seed=st.integers(0, 99),
)
def test_cached_decoding_matches_full_forward(config, batch, new_tokens, text_only, seed):
    """Images with prompts of 1+ tokens, or text-only prompts as short as one token."""
    model = perturbed(vlmzoo.build(config, seed=seed), seed)
    if text_only is None:
        inputs = make_inputs(config, batch, suffix=False, prompt_lengths=[1 + 2 * i for i in range(batch)], seed=seed)
    else:
        inputs = text_only_inputs(config, batch, text_only, seed)
    # Never emit the image token: fed back in a full forward pass it would ask for another image.
    steps = list(model.stream(**inputs, max_new_tokens=new_tokens, stop_at_eos=False, sampler=NoImageToken(config)))
    generated = torch.stack([s.tokens for s in steps], dim=1)
    ones = torch.ones_like(generated)
    with torch.no_grad():
        full = model(
            input_ids=torch.cat([inputs["input_ids"], generated], 1),
            pixel_values=inputs.get("pixel_values"),
            attention_mask=torch.cat([inputs["attention_mask"], ones], 1),
            token_type_ids=torch.cat([inputs["token_type_ids"], ones], 1),
        ).logits
    prompt = inputs["input_ids"].shape[1]
    for i, step in enumerate(steps):
        torch.testing.assert_close(step.logits, full[:, prompt - 1 + i], atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", ["paligemma-tiny", "paligemma2-tiny"])
def test_one_token_prompt_first_logits_equal_a_full_forward(name):
    """A lone prompt token is a prefill of one column: it must attend to itself only, not to empty slots."""
    model = perturbed(vlmzoo.build(name, seed=0))
    inputs = text_only_inputs(model.config, 2, 1, seed=4)
    step = next(iter(model.stream(**inputs, max_new_tokens=1)))
    with torch.no_grad():
        full = model(**inputs).logits[:, -1]
    torch.testing.assert_close(step.logits, full, atol=1e-5, rtol=0)


@pytest.mark.parametrize("chunks", [[5, 3, 1, 4], [1, 1, 6, 2], [9, 12]])
@pytest.mark.parametrize("name", ["paligemma-tiny", "paligemma2-tiny"])
def test_multi_token_continuations_of_a_cache_equal_a_full_forward(name, chunks):
    """Chunks of several tokens after the prefill (the sliding layers' ring of 8 wraps inside them)."""
    model = perturbed(vlmzoo.build(name, seed=1))
    decoder = model.language_model
    ids = text_only_inputs(model.config, 2, sum(chunks), seed=5)["input_ids"]
    with torch.no_grad():
        ones = torch.ones_like(ids)
        full = model(input_ids=ids, token_type_ids=ones).logits  # causal throughout, like the continuations
        cache = KVCache(model.config.decoder, 2, ids.shape[1], torch.float32, torch.device("cpu"))
        start = 0
        for count in chunks:
            columns = slice(start, start + count)
            positions = torch.arange(start, start + count).expand(2, count)
            cache.begin(count)
            masks = cache.decode_masks(count)
            if start == 0:
                masks = model.masks(model.prepare(ids[:, columns], token_type_ids=ones[:, columns]))
            hidden = decoder(decoder.embed(ids[:, columns]), masks, positions, cache)
            cache.advance(count)
            torch.testing.assert_close(decoder.logits(hidden), full[:, columns], atol=1e-5, rtol=0)
            start += count


@pytest.mark.parametrize(
    "family, options",
    [("gemma", {}), ("gemma", {"num_kv_heads": 4}), ("gemma2", {"sliding_window": 5}), ("gemma2", {})],
)
def test_greedy_tokens_equal_transformers(tmp_path, family, options):
    hf = make_hf_model(family, seed=3, **options)
    directory = save_hf_checkpoint(hf, tmp_path / "ckpt")
    hf = load_hf_model(directory)
    ours = vlmzoo.from_pretrained(directory, progress=False)
    inputs = make_inputs(ours.config, 3, suffix=False, prompt_lengths=[2, 6, 4], seed=1)
    with torch.no_grad():
        expected = hf.generate(**inputs, max_new_tokens=10, do_sample=False, eos_token_id=None, pad_token_id=0)
    expected = expected[:, inputs["input_ids"].shape[1] :]
    got = ours.generate(**inputs, max_new_tokens=10, stop_at_eos=False)
    assert torch.equal(got, expected)


def test_each_row_of_a_padded_batch_equals_the_row_alone():
    model = perturbed(vlmzoo.build("paligemma2-tiny", seed=0))
    inputs = make_inputs(model.config, 3, suffix=False, prompt_lengths=[1, 9, 4], seed=2)
    together = model.generate(**inputs, max_new_tokens=12, stop_at_eos=False)
    for row in range(3):
        keep = inputs["attention_mask"][row].bool()
        alone = model.generate(
            input_ids=inputs["input_ids"][row : row + 1, keep],
            pixel_values=inputs["pixel_values"][row : row + 1],
            max_new_tokens=12,
            stop_at_eos=False,
        )
        assert torch.equal(alone[0], together[row])


def test_left_padding_is_not_history_for_a_repetition_penalty():
    """The short row's padding holds the token it would pick first alone: counted as seen, the penalty would
    change that pick."""
    model = perturbed(vlmzoo.build("paligemma2-tiny", seed=0))
    inputs = make_inputs(model.config, 2, suffix=False, prompt_lengths=[1, 6], seed=2)
    keep = inputs["attention_mask"][0].bool()
    options = dict(max_new_tokens=6, stop_at_eos=False, sampler="repetition_penalty", repetition_penalty=50.0)
    alone = model.generate(input_ids=inputs["input_ids"][:1, keep], pixel_values=inputs["pixel_values"][:1], **options)
    inputs["input_ids"][0, ~keep] = alone[0, 0]
    together = model.generate(**inputs, **options)
    assert torch.equal(together[0], alone[0])


def test_sliding_layers_keep_only_the_window():
    config = vlmzoo.get_config("paligemma2-tiny").decoder  # window 8, layers 0 and 2 slide
    cache = KVCache(config, batch=2, length=40, dtype=torch.float32, device=torch.device("cpu"))
    sizes = [layer.keys.shape[2] for layer in cache.layers]
    assert sizes == [8, 40, 8]


def test_stopping_at_eos_pads_finished_rows():
    model = perturbed(vlmzoo.build("paligemma-tiny", seed=1))
    inputs = make_inputs(model.config, 2, suffix=False, seed=0)
    free = model.generate(**inputs, max_new_tokens=6, stop_at_eos=False)
    stop = int(free[0, 1])
    stopped = model.generate(**inputs, max_new_tokens=6, eos_token_id=stop, pad_token_id=0)
    first_stop = int((free[0] == stop).nonzero()[0])
    assert torch.equal(stopped[0, : first_stop + 1], free[0, : first_stop + 1])
    assert (stopped[0, first_stop + 1 :] == 0).all()
    if stop not in free[1].tolist():
        assert stopped.shape[1] == 6 and torch.equal(stopped[1], free[1])


def test_generation_rejects_bad_input():
    model = vlmzoo.build("paligemma-tiny", seed=0)
    inputs = make_inputs(model.config, 2, suffix=False, prompt_lengths=[2, 5])
    right_padded = {**inputs, "attention_mask": inputs["attention_mask"].flip(1)}
    with pytest.raises(ValueError, match="left padding"):
        model.generate(**right_padded, max_new_tokens=2)
    with pytest.raises(ValueError, match="max_new_tokens"):
        model.generate(**inputs, max_new_tokens=0)
    with pytest.raises(TypeError, match="not taken"):
        model.generate(**inputs, max_new_tokens=2, sampler="greedy", top_p=0.9)
    with pytest.raises(KeyError, match="top_p"):
        model.generate(**inputs, max_new_tokens=2, sampler="top_q")


# --- samplers ---------------------------------------------------------------------------------------------

logit_rows = st.lists(st.floats(-8, 8, allow_nan=False, width=32), min_size=3, max_size=40)


@settings(max_examples=60, deadline=None)
@given(row=logit_rows, top_p=st.floats(0.05, 1.0), seed=st.integers(0, 2**31 - 1))
def test_top_p_never_picks_outside_the_nucleus(row, top_p, seed):
    logits = torch.tensor([row])
    probs = logits.softmax(-1)[0]
    # A token is in the nucleus when the tokens strictly more likely hold less than top_p (ties either way).
    nucleus = {t for t in range(len(row)) if probs[probs > probs[t]].sum() < top_p}
    generator = torch.Generator().manual_seed(seed)
    history = torch.zeros(1, 1, dtype=torch.long)
    picks = {int(TopP(top_p)(logits.repeat(64, 1), history.repeat(64, 1), generator)[i]) for i in range(64)}
    assert picks <= nucleus


@settings(max_examples=60, deadline=None)
@given(row=logit_rows, k=st.integers(1, 10), seed=st.integers(0, 2**31 - 1))
def test_top_k_never_picks_outside_the_top_k(row, k, seed):
    logits = torch.tensor([row]).repeat(64, 1)
    threshold = logits[0].topk(min(k, len(row))).values[-1]
    picks = TopK(k)(logits, torch.zeros(64, 1, dtype=torch.long), torch.Generator().manual_seed(seed))
    assert (logits[0, picks] >= threshold).all()


@settings(max_examples=40, deadline=None)
@given(row=logit_rows, min_p=st.floats(0.0, 1.0), seed=st.integers(0, 2**31 - 1))
def test_min_p_keeps_only_likely_tokens(row, min_p, seed):
    logits = torch.tensor([row]).repeat(32, 1)
    probs = logits[0].softmax(-1)
    picks = MinP(min_p)(logits, torch.zeros(32, 1, dtype=torch.long), torch.Generator().manual_seed(seed))
    assert (probs[picks] >= min_p * probs.max() - 1e-7).all()


def test_temperature_zero_is_greedy_and_seeds_reproduce():
    logits = torch.randn(16, 50, generator=torch.Generator().manual_seed(0))
    history = torch.zeros(16, 1, dtype=torch.long)
    assert torch.equal(Temperature(0)(logits, history), Greedy()(logits, history))
    assert torch.equal(Temperature(0)(logits, history), logits.argmax(-1))
    draws = [Temperature(1.5)(logits, history, torch.Generator().manual_seed(s)) for s in (7, 7, 8)]
    assert torch.equal(draws[0], draws[1])
    assert not torch.equal(draws[0], draws[2])


def test_seeded_generation_reproduces():
    model = perturbed(vlmzoo.build("paligemma-tiny", seed=0))
    inputs = make_inputs(model.config, 2, suffix=False)
    options = dict(max_new_tokens=8, sampler="temperature+top_k", temperature=2.0, top_k=20, stop_at_eos=False)
    first = model.generate(**inputs, seed=11, **options)
    assert torch.equal(first, model.generate(**inputs, seed=11, **options))
    assert not torch.equal(first, model.generate(**inputs, seed=12, **options))


def test_repetition_penalty_lowers_seen_tokens_and_stays_greedy():
    logits = torch.tensor([[2.0, -1.0, 1.9, 0.5]])
    history = torch.tensor([[0, 1]])
    warped = RepetitionPenalty(2.0).warp(logits, history)
    assert torch.allclose(warped, torch.tensor([[1.0, -2.0, 1.9, 0.5]]))
    chain = vlmzoo.generation.make_sampler("repetition_penalty", repetition_penalty=2.0)
    assert int(chain(logits, history)[0]) == 2  # greedy after the penalty


def test_samplers_compose_by_name():
    sampler = vlmzoo.generation.make_sampler("temperature+top_p", temperature=0.5, top_p=0.8)
    assert [type(s) for s in sampler.samplers] == [Temperature, TopP]
    assert sampler.stochastic
    assert not vlmzoo.generation.make_sampler("greedy+top_k", top_k=3).stochastic


def test_a_third_party_sampler_plugs_in_by_name():
    class AlwaysLast(Sampler):
        stochastic = False

        def warp(self, logits, history):
            bonus = torch.zeros_like(logits)
            bonus[:, -2] = 1e9  # the image token is last; pick the one before it
            return logits + bonus

    class Plugin:
        @vlmzoo.hookimpl
        def register_samplers(self, registry):
            registry.sampler.register("always_last", AlwaysLast)

    model = vlmzoo.build("paligemma-tiny", seed=0)
    inputs = make_inputs(model.config, 1, suffix=False)
    with vlmzoo.plugins.plugin_registered(Plugin(), "test-sampler-plugin"):
        tokens = model.generate(**inputs, max_new_tokens=3, sampler="always_last", stop_at_eos=False)
    assert (tokens == model.config.decoder.vocab_size - 2).all()
    assert "always_last" not in vlmzoo.get_registries().sampler


# --- streaming and the pipeline ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny-pipeline"), seed=5, transform=lambda m: perturbed(m, 5))


def test_stream_yields_the_same_tokens_as_generate():
    model = perturbed(vlmzoo.build("paligemma2-tiny", seed=2))
    inputs = make_inputs(model.config, 2, suffix=False)
    tokens = model.generate(**inputs, max_new_tokens=7, stop_at_eos=False)
    steps = list(model.stream(**inputs, max_new_tokens=7, stop_at_eos=False))
    assert [s.index for s in steps] == list(range(7))
    assert torch.equal(torch.stack([s.tokens for s in steps], 1), tokens)


def test_pipeline_generates_and_streams_text(tiny_checkpoint):
    from PIL import Image

    vlm = vlmzoo.load(tiny_checkpoint)
    image = Image.new("RGB", (40, 30), (200, 30, 30))
    text = vlm.generate(image, "caption en", max_new_tokens=12, stop_at_eos=False)
    assert isinstance(text, str) and text
    assert "".join(vlm.stream(image, "caption en", max_new_tokens=12, stop_at_eos=False)) == text
    batch = vlm.generate([image, image], ["caption en", "ocr"], max_new_tokens=5)
    assert isinstance(batch, list) and len(batch) == 2
    ids = vlm.processor(images=image, prompts="caption en")
    expected = vlm.model.generate(**ids, max_new_tokens=12, stop_at_eos=False)
    assert vlm.processor.decode(expected[0]) == text


def test_cli_generates(tiny_checkpoint, tmp_path, capsys):
    from PIL import Image

    from vlmzoo.cli import main

    image_path = tmp_path / "red.png"
    Image.new("RGB", (20, 20), (255, 0, 0)).save(image_path)
    assert main(["generate", str(tiny_checkpoint), "--image", str(image_path), "--prompt", "caption en",
                 "--max-new-tokens", "4", "--stream"]) == 0  # fmt: skip
    assert capsys.readouterr().out.strip() != ""
    assert main(["generate", str(tiny_checkpoint), "--image", str(tmp_path / "missing.png"), "--prompt", "x"]) == 2
    assert "missing.png" in capsys.readouterr().err
    assert main(["info", "paligemma2-225"]) == 2
    assert "paligemma2-224" in capsys.readouterr().err
