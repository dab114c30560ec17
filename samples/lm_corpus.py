"""The PTB-format corpus reader of the language-model peers (lm_torch.py,
lm_jax.py), with loom's data::Corpus semantics: train, valid and test read in
that order into one dictionary (ids by first appearance), each line's
whitespace-separated words followed by <eos>."""

import os


class Dictionary:
    def __init__(self):
        self.word2idx, self.idx2word = {}, []

    def add_word(self, word):
        if word not in self.word2idx:
            self.word2idx[word] = len(self.idx2word)
            self.idx2word.append(word)
        return self.word2idx[word]


def ptb_file(directory, name):
    for f in (name + ".txt", "ptb." + name + ".txt"):
        p = os.path.join(directory, f)
        if os.path.exists(p):
            return p
    raise SystemExit(f"no {name}.txt in {directory}")


class Corpus:
    """loom's data::Corpus: train, valid, test read in that order into one dictionary."""

    def __init__(self, directory):
        self.dictionary = Dictionary()
        self.train, self.valid, self.test = (self.tokenize(ptb_file(directory, n)) for n in ("train", "valid", "test"))

    def tokenize(self, path):
        ids = []
        with open(path, "rb") as f:
            for line in f:
                for w in line.split():
                    ids.append(self.dictionary.add_word(w))
                ids.append(self.dictionary.add_word(b"<eos>"))
        return ids
