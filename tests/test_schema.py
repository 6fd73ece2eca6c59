import numpy as np
import pytest

from zoobot.schema import (
    BAR,
    BINOMIAL,
    DECALS_DR5,
    DIRICHLET_MULTINOMIAL,
    GZ2,
    SCHEMAS,
    SMOOTH_OR_FEATURED,
    Question,
    Schema,
    get_schema,
)


def random_fractions(schema: Schema, n_galaxies: int, rng: np.random.Generator) -> np.ndarray:
    """(galaxy, answer) fractions summing to 1 within each question."""
    fractions = rng.random((n_galaxies, schema.n_answers))
    for start, stop in schema.answer_groups:
        fractions[:, start:stop] /= fractions[:, start:stop].sum(axis=1, keepdims=True)
    return fractions


def test_gz2_shape_matches_hart16():
    assert GZ2.n_questions == 11
    assert GZ2.n_answers == 37
    assert [q.name[:3] for q in GZ2.questions] == [f"t{i:02d}" for i in range(1, 12)]
    assert "t01_smooth_or_features_a01_smooth" in GZ2.answer_columns
    assert "t08_odd_feature_a38_dust_lane" in GZ2.answer_columns


def test_decals_dr5_shape():
    assert DECALS_DR5.n_questions == 10
    assert DECALS_DR5.n_answers == 34
    assert DECALS_DR5.answer_columns[:3] == [
        "smooth-or-featured_smooth",
        "smooth-or-featured_featured-or-disk",
        "smooth-or-featured_artifact",
    ]


@pytest.mark.parametrize("schema", list(SCHEMAS.values()), ids=list(SCHEMAS))
def test_answer_groups_partition_the_answers(schema):
    covered = [i for start, stop in schema.answer_groups for i in range(start, stop)]
    assert covered == list(range(schema.n_answers))
    for (start, stop), question in zip(schema.answer_groups, schema.questions):
        assert schema.answer_columns[start:stop] == question.columns()
        assert (schema.question_index_of_answer[start:stop] == schema.questions.index(question)).all()


@pytest.mark.parametrize("schema", [GZ2, DECALS_DR5], ids=["gz2", "decals"])
def test_prob_asked_sums_down_the_tree(schema):
    """The P(asked) of a question's children, split by the answer that leads to them, adds up."""
    fractions = random_fractions(schema, 50, np.random.default_rng(0))
    asked = schema.prob_asked(fractions)
    assert asked.shape == (50, schema.n_questions)
    assert ((asked >= 0) & (asked <= 1)).all()
    columns = schema.answer_columns
    for i, question in enumerate(schema.questions):
        parent = schema.parent_of(question)
        if parent is None:
            np.testing.assert_allclose(asked[:, i], 1.0)
            continue
        p = schema.questions.index(parent)
        via = sum(fractions[:, columns.index(c)] for c in question.asked_after)
        np.testing.assert_allclose(asked[:, i], asked[:, p] * via)
        assert (asked[:, i] <= asked[:, p] + 1e-12).all()


def test_prob_asked_hand_computed_decals():
    fractions = np.zeros(DECALS_DR5.n_answers)
    col = DECALS_DR5.answer_columns.index
    fractions[col("smooth-or-featured_smooth")] = 0.2
    fractions[col("smooth-or-featured_featured-or-disk")] = 0.7
    fractions[col("smooth-or-featured_artifact")] = 0.1
    fractions[col("disk-edge-on_yes")] = 0.25
    fractions[col("disk-edge-on_no")] = 0.75
    fractions[col("has-spiral-arms_yes")] = 0.6
    fractions[col("has-spiral-arms_no")] = 0.4
    asked = dict(zip(DECALS_DR5.question_names, DECALS_DR5.prob_asked(fractions)))
    assert asked["smooth-or-featured"] == 1.0
    assert asked["how-rounded"] == pytest.approx(0.2)
    assert asked["disk-edge-on"] == pytest.approx(0.7)
    assert asked["edge-on-bulge"] == pytest.approx(0.7 * 0.25)
    assert asked["bar"] == pytest.approx(0.7 * 0.75)
    assert asked["spiral-winding"] == pytest.approx(0.7 * 0.75 * 0.6)
    assert asked["merging"] == pytest.approx(0.9)


def test_vote_fractions_zero_for_unanswered_questions():
    counts = np.zeros((1, GZ2.n_answers), dtype=int)
    counts[0, 0], counts[0, 1] = 30, 10
    fractions = GZ2.vote_fractions(counts)
    np.testing.assert_allclose(fractions[0, :3], [0.75, 0.25, 0.0])
    assert (fractions[0, 3:] == 0).all()


def test_get_schema_and_subsets_round_trip():
    bar = get_schema("decals-dr5:smooth-or-featured,disk-edge-on,bar")
    assert bar.question_names == ["smooth-or-featured", "disk-edge-on", "bar"]
    assert bar.answer_columns[-3:] == ["bar_strong", "bar_weak", "bar_no"]
    assert bar.question("bar").asked_after == ("disk-edge-on_no",)  # the tree is kept
    assert get_schema(bar.name) == bar
    assert get_schema("smooth-or-featured") is SMOOTH_OR_FEATURED
    assert BAR.answer_columns == ["bar_yes", "bar_no"]
    with pytest.raises(KeyError, match="unknown schema"):
        get_schema("gz3")
    with pytest.raises(KeyError, match="no questions"):
        get_schema("gz2:t99_nothing")


def test_invalid_schemas_are_rejected():
    with pytest.raises(ValueError, match="duplicate"):
        Schema("x", (Question("a", ("y", "n")), Question("a", ("y", "n"))))
    with pytest.raises(ValueError, match="unknown answer"):
        Schema("x", (Question("a", ("y", "n"), ("b_y",)),))
    with pytest.raises(ValueError, match="several questions"):
        Schema(
            "x",
            (
                Question("a", ("y", "n")),
                Question("b", ("y", "n")),
                Question("c", ("y", "n"), ("a_y", "b_y")),
            ),
        )


def test_likelihood_and_outputs_follow_the_schema():
    assert SMOOTH_OR_FEATURED.likelihood == BINOMIAL and SMOOTH_OR_FEATURED.n_outputs == 1
    assert BAR.likelihood == BINOMIAL and BAR.n_outputs == 1
    assert DECALS_DR5.likelihood == DIRICHLET_MULTINOMIAL and DECALS_DR5.n_outputs == 34
    three_answers = get_schema("decals-dr5:smooth-or-featured")
    assert three_answers.likelihood == DIRICHLET_MULTINOMIAL and three_answers.n_outputs == 3
    two_questions = Schema("two", (Question("a", ("y", "n")), Question("b", ("y", "n"))))
    assert two_questions.likelihood == DIRICHLET_MULTINOMIAL and two_questions.n_outputs == 4


def test_likelihood_of_a_prediction_width():
    assert SMOOTH_OR_FEATURED.likelihood_of(1) == BINOMIAL
    assert SMOOTH_OR_FEATURED.likelihood_of(2) == DIRICHLET_MULTINOMIAL  # concentrations also accepted
    assert DECALS_DR5.likelihood_of(34) == DIRICHLET_MULTINOMIAL
    single_answer = Schema("one", (Question("a", ("only",)),))
    assert single_answer.likelihood_of(1) == DIRICHLET_MULTINOMIAL  # its head has one concentration
    with pytest.raises(ValueError, match=(
        r"schema 'decals-dr5' expects 1 output \(binomial rho, only for one question with two answers\) "
        r"or 34 outputs \(one Dirichlet concentration per answer of 'decals-dr5'\), got 1"
    )):
        DECALS_DR5.likelihood_of(1)
    with pytest.raises(ValueError, match=r"schema 'smooth-or-featured' expects 1 output .* or 2 outputs .*got 3"):
        SMOOTH_OR_FEATURED.likelihood_of(3)


def test_expected_fractions_of_rho():
    rho = np.array([[[0.2], [0.6]], [[1.0], [0.0]]])  # (galaxy, sample, 1)
    fractions = SMOOTH_OR_FEATURED.expected_fractions(rho)  # (galaxy, sample, 2)
    np.testing.assert_array_equal(fractions, [[[0.2, 0.8], [0.6, 0.4]], [[1.0, 0.0], [0.0, 1.0]]])
    assert fractions.dtype == np.float64
    np.testing.assert_array_equal(SMOOTH_OR_FEATURED.expected_fractions([0.25]), [0.25, 0.75])


def test_expected_fractions_of_concentrations():
    schema = Schema("two", (Question("a", ("x", "y")), Question("b", ("p", "q", "r"))))
    alpha = np.array([[1.0, 3.0, 2.0, 2.0, 4.0]])  # (galaxy, answer)
    np.testing.assert_allclose(schema.expected_fractions(alpha), [[0.25, 0.75, 0.25, 0.25, 0.5]])
    rng = np.random.default_rng(3)
    alpha = rng.uniform(1, 100, size=(4, 5, DECALS_DR5.n_answers)).astype(np.float32)  # (galaxy, sample, answer)
    fractions = DECALS_DR5.expected_fractions(alpha)
    assert fractions.shape == alpha.shape and fractions.dtype == np.float64
    for start, stop in DECALS_DR5.answer_groups:
        np.testing.assert_allclose(fractions[..., start:stop].sum(axis=-1), 1.0)
        expected = alpha[..., start:stop].astype(np.float64)
        np.testing.assert_array_equal(fractions[..., start:stop], expected / expected.sum(axis=-1, keepdims=True))
    two = SMOOTH_OR_FEATURED.expected_fractions(np.array([[1.0, 3.0]]))  # 2 outputs: concentrations
    np.testing.assert_allclose(two, [[0.25, 0.75]])
    with pytest.raises(ValueError, match="expects 1 output"):
        DECALS_DR5.expected_fractions(np.ones((2, 5)))


def test_a_subset_keeps_the_parents_its_questions_need():
    with pytest.raises(KeyError, match=r"'bar' is asked only after answers of 'disk-edge-on', which the subset "
                                       r"lacks. Include the parents \(decals-dr5:smooth-or-featured,disk-edge-on,bar\)"):
        get_schema("decals-dr5:bar")
    with pytest.raises(KeyError, match=r"gz2:t01_smooth_or_features,t02_edgeon,t04_spiral,t10_arms_winding"):
        get_schema("gz2:t04_spiral,t10_arms_winding")
    spiral = get_schema("gz2:t01_smooth_or_features,t02_edgeon,t04_spiral")
    fractions = np.zeros((1, spiral.n_answers))
    fractions[0, [1, 4, 5]] = 1.0  # featured, not edge-on, spiral
    assert spiral.prob_asked(fractions)[0].tolist() == [1.0, 1.0, 1.0]
