"""Exact order statistics of a stream of non-negative floats in bounded memory (radix select by histograms).

CBST's class-balanced thresholds, Table 7's equal-proportion search and ``miou_at_proportion`` need the k-th
largest confidence of a class (or of all pixels) over the whole target set: about 1.3e9 values at the paper's
scale. Instead of holding and sorting them, ``RadixSelect`` reads the stream several times: a non-negative
float's bit pattern, read as an integer, sorts as the float does, so a histogram of its top 16 bits names the
bin that holds the k-th value, a histogram of the next 16 bits among that bin's values narrows it further, and
after ``bits / 16`` passes (2 for float32, 4 for float64) the value is known exactly, bit for bit, with
O(groups x 2^16) counts in memory whatever the stream's length.

The histograms are counted where the stream is: with numpy on the CPU (its ``bincount`` is several times
faster than torch's there), with torch on an accelerator.
"""

import numpy as np
import torch

from videoda.errors import InvariantError

DIGIT_BITS = 16
DIGITS = 1 << DIGIT_BITS
MAX_GROUPS = 2 ** (31 - DIGIT_BITS) - 1        # groups * 2^16 + digit stays below 2^31 (int32 arithmetic)
_INT_OF = {np.dtype(np.float32): np.dtype(np.int32), np.dtype(np.float64): np.dtype(np.int64)}
_TORCH_INT_OF = {torch.float32: torch.int32, torch.float64: torch.int64}
_INF_BITS = {32: 0x7F800000, 64: 0x7FF0000000000000}


def float_keys(values):
    """The bit patterns of non-negative floats (float32 or float64, a numpy array or a tensor on any device),
    flat, as signed integers of the same width (numpy stays numpy, a tensor stays on its device): they sort as
    the floats do, +inf the largest. A negative value, -0.0 or NaN would break that order: a ValueError."""
    if torch.is_tensor(values):
        if values.dtype not in _TORCH_INT_OF:
            raise ValueError(f"order statistics take float32 or float64 values, got {values.dtype}")
        keys = values.contiguous().view(_TORCH_INT_OF[values.dtype]).reshape(-1)
    else:
        values = np.ascontiguousarray(values)
        if values.dtype not in _INT_OF:
            raise ValueError(f"order statistics take float32 or float64 values, got {values.dtype}")
        keys = values.view(_INT_OF[values.dtype]).reshape(-1)
    if keys.shape[0] and not 0 <= int(keys.min()) <= int(keys.max()) <= _INF_BITS[key_bits(keys)]:
        # inside a stage the values are confidences (probabilities): a NaN there is an earlier step's fault
        raise InvariantError(f"order statistics take values >= 0 (no -0.0, no NaN), got {describe_bad(values)} "
                             f"among {keys.shape[0]} values (confidences: NaN ones come from non-finite predictions)")
    return keys


def describe_bad(values):
    """What breaks the order in ``values``: how many are NaN and how many negative (or -0.0)."""
    v = values.double() if torch.is_tensor(values) else torch.from_numpy(np.asarray(values, np.float64))
    return f"{int(v.isnan().sum())} NaN and {int((v.signbit() & ~v.isnan()).sum())} negative or -0.0"


def key_bits(keys):
    """The width in bits of the keys (or values) of an array or tensor: 32 or 64."""
    return 8 * (keys.element_size() if torch.is_tensor(keys) else keys.itemsize)


def keys_to_floats(keys, bits):
    """Inverse of ``float_keys``: bit patterns (int64 numpy) of ``bits``-wide floats -> float64 numpy values."""
    keys = np.asarray(keys, np.int64)
    if bits == 32:
        return keys.astype(np.int32).view(np.float32).astype(np.float64)
    return keys.view(np.float64).copy()


def _on_cpu(device):
    return device is None or torch.device(device).type == "cpu"


class RadixSelect:
    """Exact order statistics of each group of a stream, from histograms of the values' bits, 16 at a time.

    chunks: a function returning a fresh iterator of ``(values, groups)``: values float32 or float64 >= 0, one
    width for the whole stream; groups ints in [0, num_groups) of the same shape; numpy arrays or tensors. It is
    called once per pass and must give the same stream each time. The first pass (the top 16 bits) runs here
    and is kept: ``counts`` holds how many values each group has, and every ``select`` reuses it, reading the
    stream ``bits / 16 - 1`` more times (once for float32). ``device``: where the counting runs (None: CPU).
    Memory: O(num_groups x 2^16) counts and one chunk, whatever the stream's length.
    """

    def __init__(self, chunks, num_groups, device=None):
        if not 0 < num_groups <= MAX_GROUPS:
            raise ValueError(f"1 to {MAX_GROUPS} groups, got {num_groups}")
        self.chunks, self.num_groups, self.device = chunks, num_groups, device
        self.bits = None
        self.first = self._histogram(0, None)
        self.counts = self.first.sum(1)

    def _keys(self, values, groups):
        """One chunk as (keys, groups) of one integer width, on the counting device."""
        if _on_cpu(self.device):
            values = values.cpu().numpy() if torch.is_tensor(values) else values
            keys = float_keys(values)
            groups = (groups.cpu().numpy() if torch.is_tensor(groups) else np.asarray(groups)).reshape(-1)
            groups = groups.astype(keys.dtype)
        else:
            keys = float_keys(torch.as_tensor(values, device=self.device))
            groups = torch.as_tensor(groups, device=self.device).reshape(-1).to(keys.dtype)
        if self.bits is None:
            self.bits = key_bits(keys)
        elif key_bits(keys) != self.bits:
            raise ValueError(f"one stream of one float width: {self.bits} bits, then {key_bits(keys)}")
        if groups.shape != keys.shape:
            raise ValueError(f"{groups.shape[0]} groups for {keys.shape[0]} values")
        return keys, groups

    def _histogram(self, level, prefix):
        """Counts (num_groups, 2^16), int64 numpy, of digit ``level`` (0: the top 16 bits) of the values whose
        higher digits equal their group's ``prefix`` (int64 numpy, one per group)."""
        size = self.num_groups * DIGITS
        on_cpu = _on_cpu(self.device)
        hist = np.zeros(size, np.int64) if on_cpu else torch.zeros(size, dtype=torch.int64, device=self.device)
        if prefix is not None and not on_cpu:
            prefix = torch.as_tensor(prefix, device=self.device)
        for values, groups in self.chunks():
            keys, groups = self._keys(values, groups)
            shift = self.bits - DIGIT_BITS * (level + 1)
            digit = (keys >> shift) & (DIGITS - 1)
            if level:          # only the values whose higher digits are those of their group's selection
                own = prefix.take(groups) if on_cpu else prefix[groups.long()]
                match = (keys >> (shift + DIGIT_BITS)) == own
                digit, groups = digit[match], groups[match]
            index = groups * DIGITS + digit
            hist += np.bincount(index, minlength=size) if on_cpu else torch.bincount(index, minlength=size)
        hist = hist if on_cpu else hist.cpu().numpy()
        return hist.reshape(self.num_groups, DIGITS)

    def select(self, ranks):
        """The ``rank``-th largest value (0: the largest) of each group; ranks: one per group, an int in
        [0, count) or None for a group that wants none.

        Returns ``(values, above, equal)``: the selected values as float64 (NaN where none was wanted), how many
        values of the group are strictly larger and how many equal it (0 where none was wanted).
        """
        if len(ranks) != self.num_groups:
            raise ValueError(f"{len(ranks)} ranks for {self.num_groups} groups")
        for g, r in enumerate(ranks):
            if r is not None and not 0 <= r < self.counts[g]:
                raise ValueError(f"rank {r} of group {g} is out of range: it has {self.counts[g]} values")
        wanted = np.array([r is not None for r in ranks], bool)
        rank = np.array([-1 if r is None else r for r in ranks], np.int64)
        prefix = np.zeros(self.num_groups, np.int64)            # the digits decided so far
        above = np.zeros(self.num_groups, np.int64)
        equal = np.zeros(self.num_groups, np.int64)
        if not wanted.any():
            return np.full(self.num_groups, np.nan), above, equal
        rows = np.arange(self.num_groups)
        for level in range(self.bits // DIGIT_BITS):
            hist = self.first if level == 0 else self._histogram(level, prefix)
            # Per group, the digit d whose values hold the rank-th largest: (values above d) <= rank < (>= d).
            larger = np.cumsum(hist[:, ::-1], axis=1)[:, ::-1] - hist
            digit = ((larger <= rank[:, None]) & (rank[:, None] < larger + hist)).argmax(1)
            taken = larger[rows, digit]
            rank, above, equal = rank - taken, above + taken, hist[rows, digit]
            prefix = (prefix << DIGIT_BITS) | digit
        values = np.where(wanted, keys_to_floats(np.where(wanted, prefix, 0), self.bits), np.nan)
        return values, np.where(wanted, above, 0), np.where(wanted, equal, 0)


def kth_largest(chunks, num_groups, ranks_of, device=None):
    """``RadixSelect`` in one call: ranks_of(counts) gives the rank wanted in each group (or None) from the
    number of values of each group (int64 numpy). Returns ``(values, above, equal, counts)`` (see
    ``RadixSelect.select``). Reads the stream ``bits / 16`` times (2 for float32)."""
    selector = RadixSelect(chunks, num_groups, device)
    return (*selector.select(list(ranks_of(selector.counts))), selector.counts)
