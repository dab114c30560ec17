#!/usr/bin/python3
"""PyTorch peer of loom's train_lm, for samples/bench_lm.

Trains PyTorch's word_language_model (Embedding -> dropout -> nn.LSTM/GRU/RNN
-> dropout -> Linear) on the same PTB-format directory with the same
hyperparameters and semantics as loom's train_lm: the course's batchify and
get_batch, the hidden state carried (detached) across batches and reset every
epoch, SGD with gradient clipping, the learning rate divided by --anneal when
validation perplexity does not improve, and initialization as in PyTorch's
example (encoder and decoder weights U(-0.1, 0.1), decoder bias zero, the
recurrent layers' own defaults). --model transformer trains loom's
Transformer LM as nn.TransformerEncoder (pre-norm, causal mask, learned
positions), with --opt adam as train_lm's default for it.

  python samples/lm_torch.py --data ~/.cache/loom/fortunes-ptb --epochs 2 --threads 1
  ... --serve     read commands from stdin: "epoch" trains one epoch and prints
                  its JSON line, "steps N" times N training steps (to pick the
                  thread count), "test" prints the test perplexity, "quit" ends.
  ... --save-loom lm.safetensors   after training, write the weights under
                  loom's names and layouts (train_lm --load reads them).

The state_dict maps onto loom's variables name for name (loom_state_dict,
loom's checkpoints use PyTorch's names), every tensor stored as it is (loom's Linear keeps
PyTorch's [out, in] layout, the recurrent weights weight_ih_l0 [4H, D], ...,
and the attention's in_proj_weight [3d, d] too).
"""

import argparse
import json
import math
import os
import struct
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lm_corpus import Corpus  # noqa: E402  (loom's data::Corpus)


def batchify(ids, bsz):
    n = len(ids) // bsz
    return torch.tensor(ids[: n * bsz], dtype=torch.long).view(bsz, n).t().contiguous()


def get_batch(source, i, bptt):
    seq_len = min(bptt, len(source) - 1 - i)
    return source[i:i + seq_len], source[i + 1:i + 1 + seq_len].reshape(-1)


class RNNModel(nn.Module):
    def __init__(self, kind, ntoken, ninp, nhid, nlayers, dropout, tied=False):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(ntoken, ninp)
        cls = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[kind]
        self.rnn = cls(ninp, nhid, nlayers, dropout=dropout if nlayers > 1 else 0.0)
        self.decoder = nn.Linear(nhid, ntoken)
        self.kind, self.nhid, self.nlayers = kind, nhid, nlayers
        if tied:  # the word_language_model example's --tied
            if nhid != ninp:
                raise ValueError("--tied needs --embed equal to --hidden")
            self.decoder.weight = self.encoder.weight
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
        nn.init.uniform_(self.decoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)

    def forward(self, x, hidden):
        out, hidden = self.rnn(self.drop(self.encoder(x)), hidden)
        return self.decoder(self.drop(out)), hidden

    def init_hidden(self, bsz, device):
        h = torch.zeros(self.nlayers, bsz, self.nhid, device=device)
        return (h, h.clone()) if self.kind == "lstm" else h


class TransformerModel(nn.Module):
    """loom's samples::TransformerLM: embedding * sqrt(d) + learned positions, dropout, a pre-norm causal
    nn.TransformerEncoder with a final LayerNorm, Linear decoder; sequence-first ids [T, N]."""

    def __init__(self, ntoken, d, heads, ffn, nlayers, seq_len, dropout):
        super().__init__()
        self.encoder = nn.Embedding(ntoken, d)
        self.pos = nn.Embedding(seq_len, d)  # N(0, 1), as loom's PositionalEmbedding
        layer = nn.TransformerEncoderLayer(d, heads, ffn, dropout, batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, nlayers, norm=nn.LayerNorm(d), enable_nested_tensor=False)
        self.decoder = nn.Linear(d, ntoken)
        self.drop = nn.Dropout(dropout)
        self.kind, self.d = "transformer", d
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
        nn.init.uniform_(self.decoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)

    def forward(self, x, hidden=None):
        t = x.size(0)
        e = self.encoder(x.t()) * math.sqrt(self.d) + self.pos.weight[:t]
        mask = nn.Transformer.generate_square_subsequent_mask(t, device=x.device)
        h = self.transformer(self.drop(e), mask=mask, is_causal=True)
        return self.decoder(h.transpose(0, 1)), None

    def init_hidden(self, bsz, device):
        return None


def detach(h):
    if h is None:
        return None
    return tuple(x.detach() for x in h) if isinstance(h, tuple) else h.detach()


def loom_state_dict(model):
    """The model's weights under loom's variable names and layouts."""
    out = {}
    for name, p in model.state_dict().items():
        a = p.detach().cpu().numpy()
        out[name] = np.ascontiguousarray(a)
    return out


def write_safetensors(path, tensors, metadata):
    header, offset, blobs = {"__metadata__": metadata}, 0, []
    for name, a in tensors.items():
        b = a.astype(np.float32).tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [offset, offset + len(b)]}
        offset += len(b)
        blobs.append(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="PTB-format directory")
    ap.add_argument("--model", default="lstm", choices=["rnn", "lstm", "gru", "transformer"])
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--ffn", type=int, default=1024)
    ap.add_argument("--opt", default="sgd", choices=["sgd", "adam"])
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--embed", type=int, default=200)
    ap.add_argument("--hidden", type=int, default=200)
    ap.add_argument("--bptt", type=int, default=35)
    ap.add_argument("--batch", type=int, default=20)
    ap.add_argument("--eval-batch", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--lr", type=float, default=20.0)
    ap.add_argument("--clip", type=float, default=0.25)
    ap.add_argument("--dropout", type=float, default=0.2)
    ap.add_argument("--anneal", type=float, default=4.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--serve", action="store_true")
    ap.add_argument("--save-loom", help="write the trained weights under loom's names (safetensors)")
    ap.add_argument("--tied", action="store_true", help="recurrent models: decoder weight = embedding table")
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    dev = torch.device(a.device)
    corpus = Corpus(a.data)
    vocab = len(corpus.dictionary.idx2word)
    train = batchify(corpus.train, a.batch).to(dev)
    valid = batchify(corpus.valid, a.eval_batch).to(dev)
    test = batchify(corpus.test, a.eval_batch).to(dev)
    if a.model == "transformer":
        model = TransformerModel(vocab, a.d_model, a.heads, a.ffn, a.layers, a.bptt, a.dropout).to(dev)
    else:
        model = RNNModel(a.model, vocab, a.embed, a.hidden, a.layers, a.dropout, a.tied).to(dev)
    opt = (torch.optim.Adam if a.opt == "adam" else torch.optim.SGD)(model.parameters(), lr=a.lr)
    state = {"lr": a.lr, "best": math.inf, "epoch": 0}

    def train_batches(count=None):
        model.train()
        hidden = model.init_hidden(a.batch, dev)
        total, tokens, steps = 0.0, 0, 0
        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(0, train.size(0) - 1, a.bptt):
            if count is not None and steps == count:
                break
            data, targets = get_batch(train, i, a.bptt)
            hidden = detach(hidden)
            opt.zero_grad(set_to_none=True)
            out, hidden = model(data, hidden)
            loss = F.cross_entropy(out.view(-1, vocab), targets)
            loss.backward()
            if a.clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), a.clip)
            opt.step()
            total += loss.item() * targets.numel()
            tokens += targets.numel()
            steps += 1
        state["cpu"] = time.process_time() - c0
        return total / tokens, tokens, time.perf_counter() - t0

    def evaluate(source):
        model.eval()
        hidden = model.init_hidden(a.eval_batch, dev)
        total, tokens = 0.0, 0
        with torch.no_grad():
            for i in range(0, source.size(0) - 1, a.bptt):
                data, targets = get_batch(source, i, a.bptt)
                out, hidden = model(data, hidden)
                total += F.cross_entropy(out.view(-1, vocab), targets).item() * targets.numel()
                tokens += targets.numel()
        return total / tokens

    def epoch():
        state["epoch"] += 1
        lr = state["lr"]
        loss, tokens, seconds = train_batches()
        val = evaluate(valid)
        if val < state["best"]:
            state["best"] = val
        elif a.anneal > 1:
            state["lr"] /= a.anneal
            for g in opt.param_groups:
                g["lr"] = state["lr"]
        return {"epoch": state["epoch"], "train_ppl": math.exp(loss), "valid_ppl": math.exp(val), "seconds": seconds,
                "tokens_per_s": tokens / seconds, "lr": lr, "threads": a.threads}

    if a.serve:
        print(json.dumps({"ready": True, "threads": a.threads, "vocab": vocab}), flush=True)
        for line in sys.stdin:
            cmd = line.strip()
            if cmd == "epoch":
                print(json.dumps(epoch()), flush=True)
            elif cmd.startswith("steps "):
                n = int(cmd.split()[1])
                _, tokens, seconds = train_batches(n)
                print(json.dumps({"steps": n, "seconds": seconds, "cpu_seconds": state["cpu"], "tokens": tokens,
                                  "threads": a.threads}), flush=True)
            elif cmd == "test":
                print(json.dumps({"test_ppl": math.exp(evaluate(test))}), flush=True)
            elif cmd == "quit":
                break
            else:
                print(json.dumps({"error": f"unknown command {cmd!r}"}), flush=True)
        return
    for _ in range(a.epochs):
        print(json.dumps(epoch()), flush=True)
    print(json.dumps({"test_ppl": math.exp(evaluate(test))}), flush=True)
    if a.save_loom:
        write_safetensors(a.save_loom, loom_state_dict(model),
                          {"format": "torch", "model": a.model, "vocab": str(vocab), "epoch": str(state["epoch"])})


if __name__ == "__main__":
    main()
