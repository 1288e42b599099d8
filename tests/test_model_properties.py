"""Property tests of the forward pass over random small configs of both families.

Every model is built with `vlmzoo.build(config, seed=...)` and then has every parameter perturbed
with noise (Gemma norm weights start at zero, biases at zero), so no component can hide behind an
identity initialisation.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import vlmzoo

pytestmark = pytest.mark.usefixtures("single_thread")

N_IMAGE = 4  # image_size 28, patch 14
FAST = settings(max_examples=70, deadline=None)


@st.composite
def configs(draw, *, sliding=None, num_layers=None, attention=None, layer_types=None, max_window=12):
    """A small `PaliGemmaConfig`.

    ``sliding``: None draws windows or none; False never slides; True always sets a window (and
    ``layer_types``, when not given, is drawn or left None so that even layers slide).
    """
    block = draw(st.sampled_from(["gemma", "gemma2"]))
    v_heads = draw(st.sampled_from([1, 2, 4]))
    vision = vlmzoo.VisionConfig(
        attention=draw(st.sampled_from(["sdpa", "eager"])),
        image_size=28,
        patch_size=14,
        hidden_size=draw(st.sampled_from([16, 24, 32])),
        intermediate_size=draw(st.sampled_from([16, 32])),
        num_layers=draw(st.integers(0, 1)),
        num_heads=v_heads,
    )
    layers = num_layers if num_layers is not None else draw(st.integers(1, 3))
    kv_heads = draw(st.sampled_from([1, 2, 4]))
    groups = draw(st.sampled_from([1, 2, 4]))  # 1: MHA; kv_heads 1 and groups > 1: MQA; else GQA
    head_dim = draw(st.sampled_from([4, 8, 16]))
    use_window = draw(st.booleans()) if sliding is None else sliding
    window = draw(st.integers(1, max_window)) if use_window else None
    if use_window and layer_types is None:
        kinds = st.sampled_from(["full_attention", "sliding_attention"])
        layer_types = draw(st.none() | st.lists(kinds, min_size=layers, max_size=layers).map(tuple))
    vocab = draw(st.integers(64, 128))
    decoder = vlmzoo.DecoderConfig(
        block=block,
        attention=attention or draw(st.sampled_from(["sdpa", "eager"])),
        vocab_size=vocab,
        hidden_size=draw(st.sampled_from([32, 48, 64])),
        intermediate_size=draw(st.sampled_from([32, 64])),
        num_layers=layers,
        num_heads=kv_heads * groups,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        query_pre_attn_scalar=draw(st.none() | st.sampled_from([head_dim * 2.0, 16.0])),
        attn_logit_softcap=draw(st.none() | st.floats(2.0, 50.0)),
        final_logit_softcap=draw(st.none() | st.floats(10.0, 30.0)),
        sliding_window=window,
        layer_types=layer_types if use_window else None,
        rope_theta=draw(st.sampled_from([100.0, 10000.0])),
        tie_word_embeddings=draw(st.booleans()),
    )
    return vlmzoo.PaliGemmaConfig(
        name="hypothesis",
        vision=vision,
        projector=vlmzoo.ProjectorConfig(input_size=vision.hidden_size, output_size=decoder.hidden_size),
        decoder=decoder,
        image_token_id=vocab - 1,
    )


def build(config: vlmzoo.PaliGemmaConfig, seed: int, noise: float = 0.1) -> vlmzoo.PaliGemma:
    model = vlmzoo.build(config, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=g) * noise)
    return model


def sequence(config, prefix_text: int, suffix: int, g: torch.Generator):
    """``<image>`` x 4, ``<bos>``, prefix_text - 1 random tokens (type 0), then ``suffix`` tokens (type 1)."""
    text = torch.randint(0, config.image_token_id, (prefix_text + suffix,), generator=g)
    text[0] = config.bos_token_id
    ids = torch.cat([torch.full((N_IMAGE,), config.image_token_id), text])
    types = torch.cat([torch.zeros(N_IMAGE + prefix_text), torch.ones(suffix)]).long()
    return ids, types


def left_pad(config, rows, extra, g):
    """Stack ``rows`` of (ids, types), each left-padded by at least its ``extra`` with random pad ids and types."""
    length = max(len(ids) + pad for (ids, _), pad in zip(rows, extra, strict=True))
    ids = torch.randint(0, config.image_token_id, (len(rows), length), generator=g)  # any pad id
    types = torch.randint(0, 2, (len(rows), length), generator=g)  # any pad type
    mask = torch.zeros(len(rows), length, dtype=torch.long)
    starts = []
    for i, (row_ids, row_types) in enumerate(rows):
        start = length - len(row_ids)
        ids[i, start:], types[i, start:], mask[i, start:] = row_ids, row_types, 1
        starts.append(start)
    return ids, types, mask, starts


def pixels(batch: int, g: torch.Generator) -> torch.Tensor:
    return torch.rand(batch, 3, 28, 28, generator=g) * 2 - 1


@torch.no_grad()
def logits(model, ids, types, images, mask=None):
    return model(input_ids=ids, pixel_values=images, attention_mask=mask, token_type_ids=types).logits


def other_token(config, token: int, g: torch.Generator) -> int:
    """A different text token (never ``<image>``)."""
    shift = int(torch.randint(1, config.image_token_id, (1,), generator=g))
    return (token + shift) % config.image_token_id


def changed(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool((a - b).abs().max() > 1e-6)


# --------------------------------------------------------------------------------------- (a) shapes


@FAST
@given(
    config=configs(),
    lengths=st.lists(st.tuples(st.integers(1, 4), st.integers(0, 5), st.integers(0, 4)), min_size=1, max_size=3),
    seed=st.integers(0, 2**16),
)
def test_logits_shape(config, lengths, seed):
    g = torch.Generator().manual_seed(seed)
    model = build(config, seed)
    rows = [sequence(config, p, s, g) for p, s, _ in lengths]
    ids, types, mask, _ = left_pad(config, rows, [pad for *_, pad in lengths], g)
    out = logits(model, ids, types, pixels(len(rows), g), mask)
    assert out.shape == (len(rows), ids.shape[1], config.decoder.vocab_size)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    cap = config.decoder.final_logit_softcap
    if cap is not None:
        assert out.abs().max() <= cap


# --------------------------------------------------------------------------------------- (b) prefix-LM


@FAST
@given(
    config=configs(),
    prefix_text=st.integers(1, 4),
    suffix=st.integers(1, 6),
    batch=st.integers(1, 2),
    seed=st.integers(0, 2**16),
    data=st.data(),
)
def test_changing_a_suffix_token_never_changes_earlier_logits(config, prefix_text, suffix, batch, seed, data):
    g = torch.Generator().manual_seed(seed)
    model = build(config, seed)
    rows = [sequence(config, prefix_text, suffix, g) for _ in range(batch)]
    ids, types = torch.stack([r[0] for r in rows]), torch.stack([r[1] for r in rows])
    images = pixels(batch, g)
    p = data.draw(st.integers(N_IMAGE + prefix_text, ids.shape[1] - 1), label="changed suffix position")
    row = data.draw(st.integers(0, batch - 1), label="row")
    ids2 = ids.clone()
    ids2[row, p] = other_token(config, int(ids[row, p]), g)
    before, after = logits(model, ids, types, images), logits(model, ids2, types, images)
    torch.testing.assert_close(after[:, :p], before[:, :p], atol=1e-6, rtol=0)
    others = [r for r in range(batch) if r != row]
    torch.testing.assert_close(after[others], before[others], atol=1e-6, rtol=0)
    assert changed(after[row, p], before[row, p])  # the change is visible where it may be


@FAST
@given(
    config=configs(sliding=False),
    prefix_text=st.integers(2, 5),
    suffix=st.integers(0, 3),
    seed=st.integers(0, 2**16),
    data=st.data(),
)
def test_changing_a_prefix_token_changes_earlier_prefix_logits(config, prefix_text, suffix, seed, data):
    g = torch.Generator().manual_seed(seed)
    model = build(config, seed)
    ids, types = sequence(config, prefix_text, suffix, g)
    ids, types, images = ids[None], types[None], pixels(1, g)
    c = data.draw(st.integers(N_IMAGE + 1, N_IMAGE + prefix_text - 1), label="changed prefix position")
    ids2 = ids.clone()
    ids2[0, c] = other_token(config, int(ids[0, c]), g)
    before, after = logits(model, ids, types, images), logits(model, ids2, types, images)
    assert changed(after[0, :c], before[0, :c]), "a prefix token must be seen by earlier prefix tokens"
    assert changed(after[0, 0], before[0, 0])  # down to the very first image token
    if suffix:
        assert changed(after[0, -1], before[0, -1])


@FAST
@given(
    config=configs(sliding=True, num_layers=1, layer_types=("sliding_attention",), max_window=2),
    prefix_text=st.integers(4, 6),
    seed=st.integers(0, 2**16),
)
def test_the_prefix_is_bidirectional_on_sliding_layers_too(config, prefix_text, seed):
    """Prefix tokens see the whole prefix on every layer, whatever the window.

    One sliding layer with W <= 2 is the only path between positions, and the changed tokens are at
    least 2 columns from the positions checked, so they are outside the window both ways.
    """
    g = torch.Generator().manual_seed(seed)
    model = build(config, seed)
    ids, types = sequence(config, prefix_text, 2, g)
    ids, types, images = ids[None], types[None], pixels(1, g)
    first, last = N_IMAGE + 1, N_IMAGE + prefix_text - 1  # the first text token after <bos>, the last prefix one
    before = logits(model, ids, types, images)
    ids2 = ids.clone()
    ids2[0, last] = other_token(config, int(ids[0, last]), g)
    assert changed(logits(model, ids2, types, images)[0, 0], before[0, 0])  # a later key, far away
    ids3 = ids.clone()
    ids3[0, first] = other_token(config, int(ids[0, first]), g)
    assert changed(logits(model, ids3, types, images)[0, last], before[0, last])  # an earlier key, far away


# --------------------------------------------------------------------------------------- (c) padding


@FAST
@given(
    config=configs(),
    lengths=st.lists(st.tuples(st.integers(1, 4), st.integers(0, 5), st.integers(0, 5)), min_size=1, max_size=3),
    seed=st.integers(0, 2**16),
)
def test_left_padding_does_not_change_real_logits(config, lengths, seed):
    g = torch.Generator().manual_seed(seed)
    model = build(config, seed)
    rows = [sequence(config, p, s, g) for p, s, _ in lengths]
    images = pixels(len(rows), g)
    ids, types, mask, starts = left_pad(config, rows, [pad for *_, pad in lengths], g)
    padded = logits(model, ids, types, images, mask)
    for i, (row_ids, row_types) in enumerate(rows):
        alone = logits(model, row_ids[None], row_types[None], images[i : i + 1])
        torch.testing.assert_close(padded[i, starts[i] :], alone[0], atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------------------- (d) kernels


@FAST
@given(
    config=configs(attention="sdpa"),
    lengths=st.lists(st.tuples(st.integers(1, 4), st.integers(0, 5), st.integers(0, 4)), min_size=1, max_size=3),
    seed=st.integers(0, 2**16),
)
def test_sdpa_and_eager_kernels_agree(config, lengths, seed):
    g = torch.Generator().manual_seed(seed)
    sdpa = build(config.with_overrides({"vision__attention": "sdpa"}), seed)
    eager = vlmzoo.build(config.with_overrides({"decoder__attention": "eager", "vision__attention": "eager"}), seed=0)
    eager.load_state_dict(sdpa.state_dict())
    assert type(eager.language_model.layers[0].self_attn).__name__ == "EagerAttention"
    assert type(sdpa.language_model.layers[0].self_attn).__name__ == "SdpaAttention"
    rows = [sequence(config, p, s, g) for p, s, _ in lengths]
    ids, types, mask, starts = left_pad(config, rows, [pad for *_, pad in lengths], g)
    images = pixels(len(rows), g)
    a, b = logits(sdpa, ids, types, images, mask), logits(eager, ids, types, images, mask)
    for i, start in enumerate(starts):  # padding rows' outputs are unspecified
        torch.testing.assert_close(a[i, start:], b[i, start:], atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------------------- (e) sliding window


@FAST
@given(
    config=configs(sliding=True, max_window=6),
    prefix_text=st.integers(1, 2),
    suffix=st.integers(4, 9),
    seed=st.integers(0, 2**16),
    data=st.data(),
)
def test_sliding_layers_are_causal_after_the_prefix(config, prefix_text, suffix, seed, data):
    g = torch.Generator().manual_seed(seed)
    model = build(config, seed)
    ids, types = sequence(config, prefix_text, suffix, g)
    assert config.decoder.sliding_window < len(ids)
    ids, types, images = ids[None], types[None], pixels(1, g)
    p = data.draw(st.integers(N_IMAGE + prefix_text, ids.shape[1] - 1), label="changed suffix position")
    ids2 = ids.clone()
    ids2[0, p] = other_token(config, int(ids[0, p]), g)
    before, after = logits(model, ids, types, images), logits(model, ids2, types, images)
    torch.testing.assert_close(after[:, :p], before[:, :p], atol=1e-6, rtol=0)
    assert changed(after[0, p], before[0, p])


@FAST
@given(
    config=configs(sliding=True, num_layers=1, layer_types=("sliding_attention",), max_window=5),
    prefix_text=st.integers(1, 2),
    seed=st.integers(0, 2**16),
    data=st.data(),
)
def test_a_key_outside_the_window_is_not_seen(config, prefix_text, seed, data):
    """One sliding layer is the only path between positions: q sees p exactly when q - p < W."""
    window = config.decoder.window_of(0)
    assert window is not None
    g = torch.Generator().manual_seed(seed)
    model = build(config, seed)
    suffix = window + data.draw(st.integers(1, 4), label="suffix beyond the window")
    ids, types = sequence(config, prefix_text, suffix, g)
    ids, types, images = ids[None], types[None], pixels(1, g)
    length = ids.shape[1]
    p = data.draw(st.integers(N_IMAGE + prefix_text, length - 1 - window), label="changed suffix position")
    ids2 = ids.clone()
    ids2[0, p] = other_token(config, int(ids[0, p]), g)
    before, after = logits(model, ids, types, images), logits(model, ids2, types, images)
    torch.testing.assert_close(after[0, p + window :], before[0, p + window :], atol=1e-6, rtol=0)
    torch.testing.assert_close(after[0, :p], before[0, :p], atol=1e-6, rtol=0)
    for q in range(p, p + window):  # inside the window the change is seen, up to the last key it covers
        assert changed(after[0, q], before[0, q]), (p, q, window)


@FAST
@given(
    config=configs(sliding=True, max_window=16),
    prefix_text=st.integers(1, 3),
    suffix=st.integers(1, 6),
    seed=st.integers(0, 2**16),
)
def test_windows_matter_exactly_when_shorter_than_the_sequence(config, prefix_text, suffix, seed):
    """Against the same weights with full attention everywhere: a window as long as the sequence changes
    nothing; a shorter one leaves the prefix alone (it sees the whole prefix) but changes the last suffix
    position, which has keys outside its window."""
    decoder = config.decoder
    if all(decoder.window_of(i) is None for i in range(decoder.num_layers)):
        config = config.with_overrides({"decoder__layer_types": ("sliding_attention",) * decoder.num_layers})
    g = torch.Generator().manual_seed(seed)
    sliding = build(config, seed)
    full = vlmzoo.build(config.with_overrides({"decoder": {"sliding_window": None, "layer_types": None}}), seed=0)
    full.load_state_dict(sliding.state_dict())
    assert full.language_model.windows == {None}
    ids, types = sequence(config, prefix_text, suffix, g)
    ids, types, images = ids[None], types[None], pixels(1, g)
    a, b = logits(sliding, ids, types, images), logits(full, ids, types, images)
    n_prefix = N_IMAGE + prefix_text
    if config.decoder.sliding_window >= ids.shape[1]:
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    else:
        torch.testing.assert_close(a[:, :n_prefix], b[:, :n_prefix], atol=1e-5, rtol=1e-5)
        assert changed(a[0, -1], b[0, -1])
