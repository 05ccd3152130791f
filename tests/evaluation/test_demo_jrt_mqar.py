"""The MQAR order experiment of ``hazyzoo demo jrt`` (hazyzoo.demo_jrt_mqar)."""

from __future__ import annotations

import numpy as np
import pytest

from hazyzoo.demo_jrt_mqar import make_order_examples, run_mqar_order_experiment


@pytest.mark.parametrize("order", ["data_first", "questions_first"])
def test_examples_ask_pairs_of_their_own_data_in_the_stated_order(order):
    n, m, vocab = 6, 3, 40
    data = make_order_examples(
        20, vocab_size=vocab, num_kv_pairs=n, num_queries=m, order=order, seed=4
    )
    ids, labels = data["input_ids"], data["labels"]
    assert ids.shape == labels.shape == (20, 2 * n + 3 * m)
    kv = ids[:, : 2 * n] if order == "data_first" else ids[:, m : m + 2 * n]
    listed = ids[:, 2 * n : 2 * n + m] if order == "data_first" else ids[:, :m]
    answers = ids[:, 2 * n + m :].reshape(20, m, 2)
    for row in range(20):
        pairs = dict(zip(kv[row, ::2].tolist(), kv[row, 1::2].tolist()))
        assert len(pairs) == n and all(k < vocab // 2 <= v for k, v in pairs.items())
        assert answers[row, :, 0].tolist() == listed[row].tolist()  # asked as listed
        assert [pairs[k] for k in answers[row, :, 0]] == answers[row, :, 1].tolist()
    scored = labels != -100
    assert scored.sum(1).tolist() == [m] * 20
    assert np.array_equal(labels[scored], ids[scored])
    again = make_order_examples(
        20, vocab_size=vocab, num_kv_pairs=n, num_queries=m, order=order, seed=4
    )
    assert np.array_equal(again["input_ids"], ids)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="order"):
        make_order_examples(2, vocab_size=40, num_kv_pairs=4, num_queries=2, order="random", seed=0)
    with pytest.raises(ValueError, match="num_queries"):
        make_order_examples(
            2, vocab_size=40, num_kv_pairs=4, num_queries=5, order="data_first", seed=0
        )
    with pytest.raises(ValueError, match="vocab_size"):
        make_order_examples(
            2, vocab_size=8, num_kv_pairs=6, num_queries=2, order="data_first", seed=0
        )
    with pytest.raises(TypeError, match="bogus"):
        run_mqar_order_experiment("unused", bogus=1)


@pytest.mark.slow
def test_quick_run_trains_all_models_on_both_orders(tmp_path):
    result = run_mqar_order_experiment(tmp_path, quick=True)
    assert set(result["accuracy"]) == {"jrt", "based", "llama"}
    for row in result["accuracy"].values():
        assert 0.0 <= row["data_first"] <= 1.0 and 0.0 <= row["questions_first"] <= 1.0


def test_the_three_models_are_of_one_size_and_jrt_reads_the_whole_question_region():
    from hazyzoo.demo_jrt_mqar import MODELS, MQAR_ORDER_SETTINGS, _build

    n, m = MQAR_ORDER_SETTINGS["num_kv_pairs"], MQAR_ORDER_SETTINGS["num_queries"]
    models = {name: _build(name, MQAR_ORDER_SETTINGS, 2 * n + m, 2 * n + 3 * m) for name in MODELS}
    sizes = {name: sum(p.numel() for p in model.parameters()) for name, model in models.items()}
    assert max(sizes.values()) / min(sizes.values()) < 1.15, sizes
    assert models["jrt"].config.enc_length == 2 * n + m  # data and listed keys, not the answers
    assert models["jrt"].model.noncausal_prefix_length == 2 * n + m
