"""task.augment_method=lm (fadkd/data/lm_augment.py) on a tiny Llama with a byte-level BPE tokenizer built here."""

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from fadkd.config.schema import CacheConfig, Config, TaskConfig
from fadkd.data.glue_tasks import get_task
from fadkd.data.lm_augment import Proposer, lm_copies
from fadkd.models.load import ModelError

TEXTS = ["the movie is good", "the film was bad", "a good and warm story", "the plot is thin and slow"] * 20


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-lm")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator(TEXTS, trainer)

    bpe.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="<s>")
    tok.save_pretrained(folder)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, bos_token_id=0, eos_token_id=0)  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(folder)
    return str(folder)


def test_proposals_are_other_whole_words(tiny_lm):
    proposer = Proposer(tiny_lm)
    texts = ["the movie is good", "The film , 2 ok"]
    proposals = proposer.propose(texts, batch_size=2)
    assert [len(p) for p in proposals] == [4, 5]  # one list per word
    for text, per_word in zip(texts, proposals):
        for word, options in zip(text.split(), per_word):
            assert all(w.isalpha() and w == w.lower() and w != word.lower() for w, _ in options)
            assert all(q > 0 for _, q in options)
    assert proposals[1][1] and proposals[1][2] == [] and proposals[1][3] == []  # "," and "2" are kept
    assert proposer.propose(texts, batch_size=1) == proposals  # padding does not change them


def test_copies_are_unlabelled_reproducible_and_written_once(tiny_lm, tmp_path, monkeypatch):
    cfg = Config(
        task=TaskConfig(data_dir="sample", augment=3, augment_method="lm", augment_lm=tiny_lm, augment_p=0.5),
        cache=CacheConfig(dir=str(tmp_path)),
    )
    rows = [{"sentence": t, "label": i % 2} for i, t in enumerate(TEXTS[:4])]
    copies = lm_copies(rows, get_task("sst2"), cfg, print)
    assert len(copies) == 12 and all(c["label"] == -100 for c in copies)
    assert all(c["sentence"] != rows[i % 4]["sentence"] for i, c in enumerate(copies))  # copy-major order
    assert all(len(c["sentence"].split()) == len(rows[i % 4]["sentence"].split()) for i, c in enumerate(copies))
    monkeypatch.setattr("fadkd.data.lm_augment.Proposer", None)  # a second call must not load the LM
    assert lm_copies(rows, get_task("sst2"), cfg, print) == copies
    assert len(list((tmp_path / "augment").glob("*.jsonl"))) == 1


def test_no_language_model_given(tmp_path):
    cfg = Config(task=TaskConfig(data_dir="sample", augment=1, augment_method="lm"))
    with pytest.raises(ModelError, match="task.augment_lm=<HF folder>"):
        lm_copies([{"sentence": "a b", "label": 0}], get_task("sst2"), cfg, print)
