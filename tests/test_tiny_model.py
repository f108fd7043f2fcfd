"""The embedded base model's tokenizers: what the multihop policy's copying relies on."""

from __future__ import annotations

from transformers import AutoTokenizer

from selftrain.config import TinyModelConfig
from selftrain.models.tiny_model import build_tokenizer, portable_tokenizer_config
from selftrain.tasks import make_task


def _demo_texts(tmp_path) -> list[str]:
    task = make_task("multihop", seed=0, levels=[1, 2], train_per_level=4, test_per_level=2,
                     topk=1, max_turns=3, cache_dir=str(tmp_path))
    return [d.prompt + d.completion for d in task.demonstrations([1, 2], 1, 0, 60)]


def test_bpe_is_deterministic_and_round_trips_any_text(tmp_path):
    texts = _demo_texts(tmp_path)
    cfg = TinyModelConfig(tokenizer="bpe", bpe_vocab_size=400)
    a, b = build_tokenizer(cfg, texts), build_tokenizer(cfg, texts)
    assert a.get_vocab() == b.get_vocab()
    assert len(a) == 400
    odd = "Q: ünïcode — tabs\tand  double  spaces .,;<search>x</search>\n\n"
    for text in texts[:50] + [odd]:
        ids = a(text, add_special_tokens=False)["input_ids"]
        assert a.decode(ids, skip_special_tokens=True) == text


def test_bpe_reads_a_name_the_same_in_question_document_and_action(tmp_path):
    """Search-R1 spacing (`<search> name </search>`) makes a copy a copy of the same tokens."""
    texts = _demo_texts(tmp_path)
    tok = build_tokenizer(TinyModelConfig(tokenizer="bpe", bpe_vocab_size=1024), texts)
    demo = next(t for t in texts if t.count("<search>") == 2)
    name = demo.split("<search> ")[2].split(" </search>")[0]  # the second hop's entity
    ids = tok(" " + name, add_special_tokens=False)["input_ids"]
    assert len(ids) <= 3 * len(name.split())  # names are merged, not spelled out
    full = tok(demo, add_special_tokens=False)["input_ids"]
    hits = [i for i in range(len(full)) if full[i : i + len(ids)] == ids]
    # the first observation's text, the search and its document's text: three times the same
    # ids (with `<search>name</search>` the search would spell it with other tokens: two). The
    # title is in quotes, as Search-R1 writes it, so it starts without the space: other ids.
    assert len(hits) == 3
    assert f'(Title: "{name}")' in demo


def test_bpe_tokenizer_survives_save_and_reload(tmp_path):
    texts = _demo_texts(tmp_path)
    tok = build_tokenizer(TinyModelConfig(tokenizer="bpe", bpe_vocab_size=512), texts)
    tok.save_pretrained(tmp_path / "tok")
    portable_tokenizer_config(tmp_path / "tok")
    again = AutoTokenizer.from_pretrained(tmp_path / "tok")
    for text in texts[:20] + ["a .b , c"]:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert again(text, add_special_tokens=False)["input_ids"] == ids
        assert again.decode(ids, skip_special_tokens=True) == text
    assert (again.pad_token, again.eos_token, again.padding_side) == ("<pad>", "</s>", "left")
