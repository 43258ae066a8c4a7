"""fast.ai 2018 lessons 6–7, character models on Nietzsche (or your own text, :func:`~jaxlearn.text.text_loaders`):
the text and its batchings
(:mod:`~jaxlearn.text.data`), the models from three characters to a stateful LSTM
(:mod:`~jaxlearn.text.models`) and their cells (:mod:`~jaxlearn.text.cells`), what they do inside
(:mod:`~jaxlearn.text.diagnostics`) and sampling (:mod:`~jaxlearn.text.sampling`). They train on the one
Learner with the core's cross-entropy and a ``'carry'`` collection for the hidden state."""

from jaxlearn.text.cells import CELLS, GRUCell, LSTMCell, RNNCell, fusion_fence
from jaxlearn.text.data import (KINDS, NIETZSCHE_CHARS, NIETZSCHE_ENV, VOCABS, CharVocab, char_sequences,
                                char_windows, check_nietzsche, load_nietzsche, nietzsche_loaders, nietzsche_splits,
                                random_split, read_text_file, split_ids, stream_batches, text_loaders)
from jaxlearn.text.diagnostics import carried_diagnostics, gate_saturation, hidden_grad_norms, next_carry
from jaxlearn.text.models import (CELL_KINDS, WINDOW, Char3Model, CharLoopModel, CharRnn, CharSeqRnn,
                                  StatefulCharRnn, identity_init)
from jaxlearn.text.sampling import sample_text

__all__ = ["CELLS", "GRUCell", "LSTMCell", "RNNCell", "fusion_fence", "KINDS", "NIETZSCHE_CHARS", "NIETZSCHE_ENV",
           "VOCABS", "CharVocab", "char_sequences", "char_windows", "check_nietzsche", "load_nietzsche",
           "nietzsche_loaders", "nietzsche_splits", "random_split", "read_text_file", "split_ids", "stream_batches",
           "text_loaders",
           "carried_diagnostics", "gate_saturation", "hidden_grad_norms", "next_carry", "CELL_KINDS", "WINDOW",
           "Char3Model", "CharLoopModel", "CharRnn", "CharSeqRnn", "StatefulCharRnn", "identity_init", "sample_text"]
