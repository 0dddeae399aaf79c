"""The compact, query-batched sparse engine behind :class:`sparse_flops.retrieval.SparseIndex`.

**Layout.** Each dimension's posting list, sorted by row, holds per posting a 16-bit row offset
inside its block of ``block_size`` rows (at most 65,536) and a 16-bit integer code of the value:
``v ~ code * scale_j`` with ``scale_j = max_i |v_ij| / 32767`` (a non-zero value never gets
code 0). That is 4 bytes per posting, plus one 8-byte offset per (dimension, block) marking
where each block's postings start in the list, and 16 zero postings after the last.

**Search.** Queries go in batches of ``batch`` per thread. For each block, the dimensions the
batch's queries use are walked once each; the postings of a (block, dimension) segment are read
from memory once and added to the cache-resident accumulator of every query of the batch that
uses the dimension, 16 at a time (the products in one vector, each then added to its row). The
accumulator of a block then gives each row's approximate score. One query at a time (the
default) walks its terms' segments of a block in turn, in whole vector steps (the last one's
lanes past the segment add +0), and while it walks a term's postings in one block it asks the
caches for the same term's postings in the next. Either way, the rows at a query's top-k gate
are found 64 at a time with one vector compare into a bit mask, and reset while in cache; they
gather, unordered, in the query's candidate buffer, and whenever 2k + 256 have gathered the
k-th best of them (a partition) raises the gate (the first block scanned starts it from k
slices of the block's scores).

**Exactness.** The approximate score of a row is within ``E = sum_t |w_t| (scale_t + r_t)`` of
its float32 score (``r_t`` bounds float32 rounding). With ``s_k`` the k-th best approximate
score, any row below ``s_k - 2 E`` has k rows strictly above it, so it cannot be in the top k.
Every row at or above that bound is a candidate and is re-scored exactly from the float32
forward store (the database rows, CSR), adding the products in ascending dimension order as
the term-at-a-time engine does, so scores and ranks are those of the float32 inner products.
Rows the query does not touch score exactly 0; at most ``k`` of them (the smallest ids) can
rank, and only those are kept.
"""

from __future__ import annotations

import sys

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.cpython.unsafe.numbers import trailing_zeros
from numba.extending import intrinsic

CODE_MAX = 32767
# Rows per block by default: its float32 accumulator (32 KiB) fits a core's L1 data cache, and a
# query term's postings in a block (~256 at 32 non-zeros of 1024) are long enough for the walk
# to run at the vector step's pace. The scale benchmark's block_size setting at a million items
# and uniform 32 non-zeros: 0.626 ms a query against 0.677 at 4,096 rows and 0.714 at 16,384
# (results/scale/block_size/).
DEFAULT_BLOCK = 8192
# A query whose postings in a block exceed this fraction of the block's rows scans the block's
# accumulator (~0.25 cycles a row with the vector compare, and the postings take the vector
# scatter-add) instead of tracking the rows it touched (a test and a record per posting, then a
# visit per touched row). At a million items the two cost the same near 0.035 (uniform 6
# non-zeros of 1024); at 0.0625 (uniform 8) scanning took 0.20 ms a query where tracking took
# 0.26, and at 0.016 (uniform 4) 0.27 where tracking took 0.10, rows scoring 0 then crowding
# the candidate buffer.
SCAN_FRACTION = 0.05
_EPS32 = np.float32(2.0**-24)
# Postings per vector step of the scatter-add.
_LANES = 16
_LANES_U = np.uint64(_LANES)


@numba.njit(cache=True, nogil=True)
def block_pointers(post_ptr, post_rows, n, block):
    """``(d, nb + 1)`` offsets: postings of dimension j in row block b are
    ``[ptr[j, b], ptr[j, b + 1])`` (posting lists are sorted by row). Both engines' layout."""
    d = post_ptr.shape[0] - 1
    nb = (n + block - 1) // block
    ptr = np.empty((d, nb + 1), np.int64)
    for j in range(d):
        p = post_ptr[j]
        end = post_ptr[j + 1]
        for b in range(nb + 1):
            limit = b * block
            while p < end and post_rows[p] < limit:
                p += 1
            ptr[j, b] = p
        ptr[j, nb] = end
    return ptr


@numba.njit(cache=True, nogil=True)
def build_layout(col_ptr, col_rows, col_vals, n, block, inv_scale):
    """The compact postings of a CSC database (rows ascending within each column):
    ``(ptr (d, nb + 1) int64, rows (nnz + 16,) uint16, codes (nnz + 16,) int16)``; the
    postings of dimension ``j`` in row block ``b`` are ``ptr[j, b]`` to ``ptr[j, b + 1]``, and
    16 zeros follow the last, so that a vector step at the end of any segment stays within the
    arrays (:func:`_scatter_lanes`)."""
    d = col_ptr.shape[0] - 1
    nnz = col_ptr[d]
    ptr = block_pointers(col_ptr, col_rows, n, block)
    rows = np.zeros(nnz + _LANES, np.uint16)
    codes = np.zeros(nnz + _LANES, np.int16)
    for j in range(d):
        for p in range(col_ptr[j], col_ptr[j + 1]):
            r = col_rows[p]
            rows[p] = r - (r // block) * block
            c = np.round(col_vals[p] * inv_scale[j])
            if c > CODE_MAX:
                c = CODE_MAX
            elif c < -CODE_MAX:
                c = -CODE_MAX
            if c == 0:
                c = 1.0 if col_vals[p] > 0 else -1.0
            codes[p] = np.int16(c)
    return ptr, rows, codes


_ONE = np.uint64(1)
_LINE = 32  # 16-bit entries per 64-byte cache line
_LINE_U = np.uint64(_LINE)


@intrinsic
def _prefetch_intrinsic(typingctx, arr, idx):
    """LLVM's prefetch (read, keep in all cache levels) of ``arr[idx]``'s cache line."""
    sig = types.void(arr, idx)

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, signature.args[0], ary, [args[1]])
        i8p = builder.bitcast(ptr, ir.IntType(8).as_pointer())
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p.type, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0i8")
        builder.call(fn, [i8p, i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return sig, codegen


@numba.njit(cache=True, nogil=True)
def _prefetch_probe(a):
    _prefetch_intrinsic(a, 0)
    return a[0]


try:  # an LLVM that names the intrinsic otherwise: no prefetching, same results
    _prefetch_probe(np.zeros(1, np.uint16))
    _prefetch = _prefetch_intrinsic
except Exception:  # noqa: BLE001 - any compilation failure means "no prefetch here"

    @numba.njit(inline="always")
    def _prefetch(arr, idx):
        pass


_MASK_WIDTH = 64


def _splat(builder, value, width):
    """An LLVM vector of ``width`` copies of the scalar ``value``."""
    i32 = ir.IntType(32)
    vec = builder.insert_element(
        ir.Constant(ir.VectorType(value.type, width), ir.Undefined), value, i32(0)
    )
    return builder.shuffle_vector(vec, vec, ir.Constant(ir.VectorType(i32, width), None))


@intrinsic
def _mask_at_least_intrinsic(typingctx, arr, start, g):
    """A 64-bit mask of which of the float32 ``arr[start : start + 64]`` are ``>= g``: one
    vector compare (the caller keeps ``start + 64`` within the array)."""
    sig = types.uint64(arr, start, g)

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, signature.args[0], ary, [args[1]])
        vty = ir.VectorType(ir.FloatType(), _MASK_WIDTH)
        vec = builder.load(builder.bitcast(ptr, vty.as_pointer()), align=4)
        gv = _splat(builder, args[2], _MASK_WIDTH)
        hit = builder.fcmp_ordered(">=", vec, gv)
        return builder.bitcast(hit, ir.IntType(_MASK_WIDTH))

    return sig, codegen


@numba.njit(cache=True, nogil=True)
def _mask_probe(a, g):
    return _mask_at_least_intrinsic(a, 0, g)


@numba.njit(cache=True, nogil=True, inline="always")
def _mask_at_least_loop(arr, start, g):
    m = np.uint64(0)
    for i in range(_MASK_WIDTH):
        if arr[start + i] >= g:
            m |= np.uint64(1) << np.uint64(i)
    return m


try:  # a target whose LLVM cannot lower the vector compare: the same mask, one at a time
    _probe = np.arange(_MASK_WIDTH, dtype=np.float32)
    if _mask_probe(_probe, np.float32(62.0)) != np.uint64(3) << np.uint64(62):
        raise RuntimeError("vector mask with the wrong bit order")
    _mask_at_least = _mask_at_least_intrinsic
except Exception:  # noqa: BLE001 - any failure means "use the scalar mask"
    _mask_at_least = _mask_at_least_loop


@numba.njit(cache=True, nogil=True, inline="always")
def _prefetch_span(rows, codes, a, e):
    """Asks the caches for postings ``a`` to ``e``, a line of each array per 32 postings."""
    a = np.uint64(a)
    e = np.uint64(e)
    while a < e:
        _prefetch(rows, a)
        _prefetch(codes, a)
        a += _LINE_U


@numba.njit(cache=True, nogil=True, inline="always")
def _prefetch_segment(ptr, rows, codes, j, b):
    """Asks the caches for the postings of dimension ``j`` in block ``b`` ahead of their use:
    the hardware prefetchers do not follow dozens of short interleaved streams (at 64 non-zeros
    per item, a million items, this halves the time of a query). The batched search asks for a
    whole block ahead; one query at a time asks for its terms' postings in the first block at
    its start, then for a term's postings in the next block a step's worth at a time while it
    walks them in this one (:func:`search_one`)."""
    _prefetch_span(rows, codes, ptr[j, b], ptr[j, b + 1])


# The step reads its 16 row offsets as four 64-bit words (one load per four postings instead of
# one each, which frees load slots for the accumulator), lane l in bits 16 (l % 4) of word l // 4:
# the byte order of a little-endian machine; elsewhere each offset is loaded on its own.
_ROW_WORDS = sys.byteorder == "little"


@intrinsic
def _scatter_lanes(typingctx, acc, rows, codes, p, w, nvalid):
    """``acc[rows[p + l]] += w * codes[p + l]`` for the 16 lanes ``l`` in lane order, the lanes
    from ``nvalid`` on adding ``+0`` instead (the caller keeps ``p + 16`` within the arrays and
    their rows within ``acc``). The 16 products come from one vector load, convert and multiply,
    and each is then added on its own; the row offsets come four to a 64-bit load. That leaves a
    posting about four instructions (take its row and its product, load, add and store its
    row's score), and the results are the same bits as a loop one posting at a time (the same
    float32 products, added in the same order; adding ``+0`` changes no score, as a score is
    never ``-0``: it starts at ``+0``, and a sum that cancels to zero is ``+0``). The vector
    gather and scatter of AVX-512 (one gather, add and masked scatter per 16 postings of a
    segment, whose rows are distinct) ran at 0.93-0.95 G postings/s on a Zen 4 core against
    2.3-2.5 for this step, with the same bits."""
    sig = types.void(acc, rows, codes, p, w, nvalid)

    def codegen(context, builder, signature, args):
        a_acc, a_rows, a_codes = (
            context.make_array(t)(context, builder, v)
            for t, v in zip(signature.args[:3], args[:3], strict=True)
        )
        p, nvalid = args[3], args[5]
        i16, i32, i64, f32 = ir.IntType(16), ir.IntType(32), ir.IntType(64), ir.FloatType()
        fv = ir.VectorType(f32, _LANES)
        cptr = builder.bitcast(
            builder.gep(a_codes.data, [p]), ir.VectorType(i16, _LANES).as_pointer()
        )
        prod = builder.fmul(
            _splat(builder, args[4], _LANES), builder.sitofp(builder.load(cptr, align=2), fv)
        )
        short = builder.icmp_unsigned("<", nvalid, i64(_LANES))
        nv = builder.trunc(builder.select(short, nvalid, i64(_LANES)), i32)
        lane_ids = ir.Constant(ir.VectorType(i32, _LANES), list(range(_LANES)))
        keep = builder.icmp_unsigned("<", lane_ids, _splat(builder, nv, _LANES))
        prod = builder.select(keep, prod, ir.Constant(fv, [0.0] * _LANES))
        rptr = builder.gep(a_rows.data, [p])
        if _ROW_WORDS:
            wptr = builder.bitcast(rptr, i64.as_pointer())
            words = [builder.load(builder.gep(wptr, [i64(q)]), align=2) for q in range(4)]
        for lane in range(_LANES):
            if _ROW_WORDS:
                r = builder.lshr(words[lane // 4], i64(16 * (lane % 4)))
                r = builder.and_(r, i64(0xFFFF))
            else:
                r = builder.zext(builder.load(builder.gep(rptr, [i64(lane)]), align=2), i64)
            at = builder.gep(a_acc.data, [r])
            s = builder.fadd(builder.load(at, align=4), builder.extract_element(prod, i32(lane)))
            builder.store(s, at, align=4)
        return context.get_dummy_value()

    return sig, codegen


@numba.njit(cache=True, nogil=True)
def scatter(acc, rows, codes, p0, p1, w):
    """``acc[rows[p]] += w * codes[p]`` for the postings ``p0`` to ``p1``, 16 at a time
    (:func:`_scatter_lanes`), the rest one at a time (nothing is read past ``p1``)."""
    p = np.uint64(p0)
    end = np.uint64(p1)
    while p + _LANES_U <= end:
        _scatter_lanes(acc, rows, codes, p, w, _LANES_U)
        p += _LANES_U
    while p < end:
        acc[rows[p]] += w * np.float32(codes[p])
        p += _ONE


@numba.njit(cache=True, nogil=True, inline="always")
def _prefetch_row(f_ptr, f_idx, f_val, row):
    """Asks the caches for every line of database row ``row`` of the forward store."""
    a = f_ptr[row]
    e = f_ptr[row + 1]
    if e > a:
        p = a
        while p < e:
            _prefetch(f_idx, p)
            p += _LINE
        _prefetch(f_idx, e - 1)
        p = a
        while p < e:
            _prefetch(f_val, p)
            p += _LINE // 2
        _prefetch(f_val, e - 1)


@numba.njit(cache=True, nogil=True)
def _exact(row, f_ptr, f_idx, f_val, qd):
    """The float32 inner product of database row ``row`` with the dense query ``qd``, products
    added in ascending dimension order. The row's dimensions the query lacks add ``0 * v``, a
    zero, without a branch: the sum starts at +0 and adding a zero leaves any value but -0
    unchanged, and a sum from +0 never reaches -0 (values are finite, checked at build), so the
    result is that of adding the query's dimensions alone."""
    acc = np.float32(0.0)
    for p in range(f_ptr[row], f_ptr[row + 1]):
        acc += qd[f_idx[p]] * f_val[p]
    return acc


@numba.njit(cache=True, nogil=True)
def _select(buf_s, buf_i, n, k, e2, floor, g):
    """The gate from the first ``n`` buffered rows of one query: with ``s`` their k-th best
    approximate score, no row below ``s - e2`` can reach the top k (k rows already score
    ``s`` or more), so the gate rises to it and the rows below it (or not above ``floor``)
    leave the buffer, the others keeping their order. Returns the rows kept and the gate."""
    if n >= k:
        kth = np.partition(buf_s[:n], n - k)[n - k]
        g = max(g, floor, np.float32(kth - e2))
    m = 0
    for t in range(n):
        v = buf_s[t]
        if v >= g and v > floor:
            buf_s[m] = v
            buf_i[m] = buf_i[t]
            m += 1
    return m, g


@numba.njit(cache=True, nogil=True, inline="always")
def _soft_start(k):
    """Rows a query's candidate buffer gathers before its k-th best first raises the gate."""
    return 2 * k + 4 * _MASK_WIDTH


@numba.njit(cache=True, nogil=True)
def _raise_gate(buf_s, buf_i, n, k, e2, floor, g, soft):
    """:func:`_select` once more than ``soft`` rows are buffered; where ties or too few rows
    keep most of them above the gate, the next try waits for ``soft`` rows more. Returns the
    rows kept, the gate and the new ``soft``."""
    n, g = _select(buf_s, buf_i, n, k, e2, floor, g)
    return n, g, max(soft, n + _soft_start(k))


@numba.njit(cache=True, nogil=True)
def _make_room(buf_s, buf_i, s, n, need, k, e2, floor, g):
    """Room for ``need`` more rows in slot ``s``'s candidate buffer (``buf_* (slots, cap)``,
    ``n`` rows held): the gate drops what it can (:func:`_select`), and if that is not enough
    every slot's buffer grows, contents kept. Returns the rows held, the gate and the buffers."""
    if buf_s.shape[1] - n < need:
        n, g = _select(buf_s[s], buf_i[s], n, k, e2, floor, g)
        if buf_s.shape[1] - n < need:
            bq, cap = buf_s.shape
            new_cap = max(2 * cap, n + need)
            new_s = np.empty((bq, new_cap), np.float32)
            new_i = np.empty((bq, new_cap), np.int64)
            new_s[:, :cap] = buf_s
            new_i[:, :cap] = buf_i
            buf_s, buf_i = new_s, new_i
    return n, g, buf_s, buf_i


@numba.njit(cache=True, nogil=True)
def _least_slice_max(acc, blen, k):
    """The least of the maxima of ``acc[:blen]`` cut in ``k`` slices (``blen >= k``)."""
    size = blen // k
    least = np.float32(np.inf)
    for c in range(k):
        top = acc[c * size]
        for i in range(c * size + 1, (c + 1) * size):
            top = max(top, acc[i])
        least = min(least, top)
    return least


@numba.njit(cache=True, nogil=True)
def _gather_scan(acc, blen, r0, buf_s, buf_i, n, g, soft, k, e2, floor):
    """Adds the rows of a scanned block (``acc[:blen]``, ids from ``r0``) at or above the gate
    to one query's candidate buffer, which has room for ``blen`` more, and resets them while in
    cache: 64 rows at a time, a vector compare gives which of them reach the gate and their
    bits go to the buffer without a branch each. Returns the rows buffered, the gate and
    ``soft`` (see :func:`_raise_gate`). While fewer than ``k`` rows are buffered, the gate
    first rises to the least of the maxima of ``k`` slices of the block, minus ``e2``: those
    ``k`` rows score at least that, so no row below it can reach the top k."""
    if n < k and blen >= 2 * k:
        g = max(g, np.float32(_least_slice_max(acc, blen, k) - e2))
    c0 = 0
    while c0 + _MASK_WIDTH <= blen:
        if n > soft:
            n, g, soft = _raise_gate(buf_s, buf_i, n, k, e2, floor, g, soft)
        bits = _mask_at_least(acc, c0, g)
        while bits != 0:
            i = c0 + trailing_zeros(bits)
            bits &= bits - _ONE
            buf_s[n] = acc[i]
            buf_i[n] = r0 + i
            n += 1
        for i in range(c0, c0 + _MASK_WIDTH):
            acc[i] = 0.0
        c0 += _MASK_WIDTH
    for i in range(c0, blen):
        if acc[i] >= g:
            buf_s[n] = acc[i]
            buf_i[n] = r0 + i
            n += 1
    acc[c0:blen] = 0.0
    return n, g, soft


@numba.njit(cache=True, nogil=True)
def _gather_tracked(acc, mark, touched, nt, blen, r0, buf_s, buf_i, n, g, soft, k, e2, floor):
    """:func:`_gather_scan` for a block whose ``nt`` touched rows were tracked (``touched``,
    ``mark``), resetting those rows and marks."""
    for t in range(nt):
        i = touched[t]
        if acc[i] >= g:
            if n > soft:
                n, g, soft = _raise_gate(buf_s, buf_i, n, k, e2, floor, g, soft)
            buf_s[n] = acc[i]
            buf_i[n] = r0 + i
            n += 1
    for t in range(nt):
        i = touched[t]
        acc[i] = 0.0
        mark[i] = 0
    return n, g, soft


@numba.njit(cache=True, nogil=True)
def _untouched(mark, blen, r0, zeros, nz, k):
    """Adds the block's rows no posting touched (``mark`` 0; they score exactly 0) to
    ``zeros`` until it holds ``k``; returns how many it holds."""
    for i in range(blen):
        if nz == k:
            break
        if mark[i] == 0:
            zeros[nz] = r0 + i
            nz += 1
    return nz


@numba.njit(cache=True, nogil=True)
def _query_bounds(q_idx, q_val, scale, threshold):
    """One query's term weights on the codes (``q_val * scale``), the bound ``E`` on the gap
    between its approximate and float32 scores (quantisation, at most ``scale`` per posting,
    plus float32 rounding of both sums), and the floor: no row at or below it can score above
    ``threshold``."""
    m = q_idx.shape[0]
    tw = np.empty(m, np.float32)
    e_q = 0.0
    m_q = 0.0
    for t in range(m):
        tw[t] = q_val[t] * scale[q_idx[t]]
        e_q += abs(q_val[t]) * scale[q_idx[t]]
        m_q += abs(q_val[t]) * scale[q_idx[t]] * CODE_MAX
    err = np.float32((e_q + 4.0 * (m + 2) * _EPS32 * m_q) * (1.0 + 1e-3))
    floor = np.float32(threshold - err) if threshold > -np.inf else np.float32(-np.inf)
    return tw, err, floor


@numba.njit(cache=True, nogil=True)
def _buffer_size(k, block):
    """A candidate buffer's starting room: ``soft`` rows (see :func:`_raise_gate`) plus a
    whole block's."""
    return _soft_start(k) + block


@numba.njit(cache=True, nogil=True)
def search_range(queries, lo, hi, layout, forward, k, threshold, batch, out):
    """Top-k of queries ``lo`` to ``hi`` of ``queries`` = ``(indptr, indices, values)`` (CSR,
    sorted dims), ``batch`` at a time; ``out`` = ``(scores (q, k), ids (q, k), postings (q,))``
    (scores and ids pre-filled with ``-inf`` and ``-1``)."""
    q_ptr, q_idx, q_val = queries
    ptr, rows, codes, scale, n, d, block = layout
    out_s, out_i, out_post = out
    nb = (n + block - 1) // block
    acc = np.zeros((batch, block), np.float32)
    mark = np.zeros((batch, block), np.uint8)
    touched = np.empty((batch, block), np.int64)
    nt = np.zeros(batch, np.int64)
    dense = np.zeros(batch, np.bool_)
    slot_post = np.zeros(batch, np.int64)
    qd = np.zeros(d, np.float32)
    buf_s = np.empty((batch, _buffer_size(k, block)), np.float32)
    buf_i = np.empty((batch, _buffer_size(k, block)), np.int64)
    bsize = np.zeros(batch, np.int64)
    soft = np.zeros(batch, np.int64)
    zero_i = np.empty((batch, k), np.int64)
    zsize = np.zeros(batch, np.int64)
    err = np.zeros(batch, np.float32)
    floor = np.zeros(batch, np.float32)
    gate = np.zeros(batch, np.float32)
    for start in range(lo, hi, batch):
        nbq = min(batch, hi - start)
        t0 = q_ptr[start]
        nterms = q_ptr[start + nbq] - t0
        tj = np.empty(nterms, np.int64)
        ts = np.empty(nterms, np.int64)
        tw = np.empty(nterms, np.float32)
        for s in range(nbq):
            a, e = q_ptr[start + s], q_ptr[start + s + 1]
            w, err[s], floor[s] = _query_bounds(q_idx[a:e], q_val[a:e], scale, threshold)
            tj[a - t0 : e - t0] = q_idx[a:e]
            ts[a - t0 : e - t0] = s
            tw[a - t0 : e - t0] = w
            gate[s] = floor[s]
            soft[s] = _soft_start(k)
            bsize[s] = 0
            zsize[s] = 0
            out_post[start + s] = 0
        order = np.argsort(tj, kind="mergesort")
        uj = np.empty(nterms, np.int64)
        ustart = np.empty(nterms + 1, np.int64)
        nu = 0
        for t in range(nterms):
            j = tj[order[t]]
            if nu == 0 or uj[nu - 1] != j:
                uj[nu] = j
                ustart[nu] = t
                nu += 1
        ustart[nu] = nterms
        for b in range(nb):
            r0 = b * block
            blen = min(block, n - r0)
            if b + 1 < nb:
                for u in range(nu):
                    _prefetch_segment(ptr, rows, codes, uj[u], b + 1)
            for s in range(nbq):
                slot_post[s] = 0
                nt[s] = 0
            for u in range(nu):
                length = ptr[uj[u], b + 1] - ptr[uj[u], b]
                for g in range(ustart[u], ustart[u + 1]):
                    slot_post[ts[order[g]]] += length
            for s in range(nbq):
                dense[s] = slot_post[s] > SCAN_FRACTION * blen
                out_post[start + s] += slot_post[s]
            for u in range(nu):
                p0 = ptr[uj[u], b]
                p1 = ptr[uj[u], b + 1]
                if p0 == p1:
                    continue
                for g in range(ustart[u], ustart[u + 1]):
                    s = ts[order[g]]
                    w = tw[order[g]]
                    if dense[s]:
                        scatter(acc[s], rows, codes, p0, p1, w)
                    else:
                        c = nt[s]
                        for p in range(p0, p1):
                            r = rows[p]
                            if mark[s, r] == 0:
                                mark[s, r] = 1
                                touched[s, c] = r
                                c += 1
                            acc[s, r] += w * np.float32(codes[p])
                        nt[s] = c
            for s in range(nbq):
                e2 = 2.0 * err[s]
                # Room for every row of the block, so the gathering never grows the buffer.
                bsize[s], gate[s], buf_s, buf_i = _make_room(
                    buf_s, buf_i, s, bsize[s], blen, k, e2, floor[s], gate[s]
                )
                if dense[s]:
                    bsize[s], gate[s], soft[s] = _gather_scan(
                        acc[s], blen, r0, buf_s[s], buf_i[s], bsize[s], gate[s], soft[s],
                        k, e2, floor[s],
                    )  # fmt: skip
                    continue
                if threshold < 0.0 and zsize[s] < k:
                    zsize[s] = _untouched(mark[s], blen, r0, zero_i[s], zsize[s], k)
                bsize[s], gate[s], soft[s] = _gather_tracked(
                    acc[s], mark[s], touched[s], nt[s], blen, r0, buf_s[s], buf_i[s], bsize[s],
                    gate[s], soft[s], k, e2, floor[s],
                )  # fmt: skip
        for s in range(nbq):
            q = start + s
            _finish(
                q_idx[q_ptr[q] : q_ptr[q + 1]],
                q_val[q_ptr[q] : q_ptr[q + 1]],
                buf_s[s],
                buf_i[s],
                bsize[s],
                2.0 * err[s],
                floor[s],
                gate[s],
                zero_i[s, : zsize[s]],
                forward,
                qd,
                k,
                threshold,
                out_s[q],
                out_i[q],
            )


@numba.njit(cache=True, nogil=True)
def search_one(q_idx, q_val, layout, forward, k, threshold, scratch, out_s, out_i):
    """Top-k of one query (CSR row: sorted dims ``q_idx``, values ``q_val``), one block at a
    time; ``scratch`` = ``(acc (1, block), mark (1, block), touched (1, block), qd (d,),
    buf_s (1, c), buf_i (1, c))``, one thread's, reused query after query (``buf_*``: the
    candidate buffer, ``c >= 2k + 256 + block``; a fresh one per query paid its page faults,
    ~0.06 ms of a query at a million items).
    Returns the postings walked."""
    ptr, rows, codes, scale, n, d, block = layout
    acc2, mark2, touched2, qd, buf_s2, buf_i2 = scratch
    acc, mark, touched, buf_s, buf_i = acc2[0], mark2[0], touched2[0], buf_s2[0], buf_i2[0]
    nb = (n + block - 1) // block
    m = q_idx.shape[0]
    tw, err, floor = _query_bounds(q_idx, q_val, scale, threshold)
    e2 = 2.0 * err
    # Rows at or above the gate, kept unordered; whenever more than ``soft`` of them gather,
    # the k-th best raises the gate (see _select).
    soft = _soft_start(k)
    bsize = 0
    zeros = np.empty(k, np.int64)
    nz = 0
    g = floor
    total = 0
    if nb > 0:
        for t in range(m):
            _prefetch_segment(ptr, rows, codes, q_idx[t], 0)
    for b in range(nb):
        r0 = b * block
        blen = min(block, n - r0)
        postings = 0
        for t in range(m):
            postings += ptr[q_idx[t], b + 1] - ptr[q_idx[t], b]
        total += postings
        # Room for every row of the block, so the gathering never grows the buffer.
        bsize, g, buf_s2, buf_i2 = _make_room(buf_s2, buf_i2, 0, bsize, blen, k, e2, floor, g)
        buf_s, buf_i = buf_s2[0], buf_i2[0]
        dense = postings > SCAN_FRACTION * blen
        nt = 0
        for t in range(m):
            w = tw[t]
            j = q_idx[t]
            # Unsigned positions: no negative-index wrap-around test per posting.
            p = np.uint64(ptr[j, b])
            p1 = np.uint64(ptr[j, b + 1])
            # The term's postings in the next block, asked for a step's worth at a time while
            # these are walked: a block ahead, far enough to hide the memory's latency.
            a = np.uint64(0)
            a1 = np.uint64(0)
            if b + 1 < nb:
                a = p1
                a1 = np.uint64(ptr[j, b + 2])
            if dense:
                # Whole vector steps, the last one's lanes past the segment adding +0: no
                # one-at-a-time tail, one loop exit a segment.
                while p < p1:
                    _prefetch(rows, a)
                    _prefetch(codes, a)
                    a = min(a + _LANES_U, a1)
                    _scatter_lanes(acc, rows, codes, p, w, p1 - p)
                    p += _LANES_U
                _prefetch_span(rows, codes, a, a1)
            else:
                _prefetch_span(rows, codes, a, a1)
                while p < p1:
                    r = rows[p]
                    if mark[r] == 0:
                        mark[r] = 1
                        touched[nt] = r
                        nt += 1
                    acc[r] += w * np.float32(codes[p])
                    p += _ONE
        if dense:
            bsize, g, soft = _gather_scan(
                acc, blen, r0, buf_s, buf_i, bsize, g, soft, k, e2, floor
            )  # fmt: skip
            continue
        if threshold < 0.0 and nz < k:
            nz = _untouched(mark, blen, r0, zeros, nz, k)
        bsize, g, soft = _gather_tracked(
            acc, mark, touched, nt, blen, r0, buf_s, buf_i, bsize, g, soft, k, e2, floor
        )  # fmt: skip
    _finish(
        q_idx, q_val, buf_s, buf_i, bsize, e2, floor, g, zeros[:nz], forward, qd, k,
        threshold, out_s, out_i,
    )  # fmt: skip
    return total


# Candidates ahead of the one re-scored whose forward-store offsets, and whose entries, are asked
# for: a few at a time keeps the requests within what a core holds in flight (asking for all of
# a query's ~100 candidates at once before reading any took twice as long at a million items).
_AHEAD_PTR = 16
_AHEAD_ROW = 8


@numba.njit(cache=True, nogil=True)
def _finish(
    q_idx, q_val, buf_s, buf_i, n, e2, floor, g, zeros, forward, qd, k, threshold, out_s, out_i
):
    """Exact re-score of one query's ``n`` buffered candidates (those the final gate keeps)
    and of its untouched ``zeros``; writes the query's top k."""
    f_ptr, f_idx, f_val = forward
    nc, g = _select(buf_s, buf_i, n, k, e2, floor, g)
    m = nc + zeros.shape[0]
    cs = np.empty(m, np.float32)
    ci = np.empty(m, np.int64)
    ci[:nc] = buf_i[:nc]
    for t in range(q_idx.shape[0]):
        qd[q_idx[t]] = q_val[t]
    # The candidates' rows lie anywhere in the forward store: while one is re-scored, the
    # offsets of the one _AHEAD_PTR further and the entries of the one _AHEAD_ROW further are
    # on their way.
    for t in range(min(_AHEAD_PTR, nc)):
        _prefetch(f_ptr, ci[t])
    for t in range(min(_AHEAD_ROW, nc)):
        _prefetch_row(f_ptr, f_idx, f_val, ci[t])
    c = 0
    for t in range(nc):
        if t + _AHEAD_PTR < nc:
            _prefetch(f_ptr, ci[t + _AHEAD_PTR])
        if t + _AHEAD_ROW < nc:
            _prefetch_row(f_ptr, f_idx, f_val, ci[t + _AHEAD_ROW])
        row = ci[t]
        v = _exact(row, f_ptr, f_idx, f_val, qd)
        if v > threshold:
            cs[c] = v
            ci[c] = row
            c += 1
    for t in range(zeros.shape[0]):
        cs[c] = 0.0
        ci[c] = zeros[t]
        c += 1
    for t in range(q_idx.shape[0]):
        qd[q_idx[t]] = 0.0
    by_id = np.argsort(ci[:c], kind="mergesort")
    s_by_id = cs[:c][by_id]
    by_score = np.argsort(-s_by_id, kind="mergesort")
    for pos in range(min(k, c)):
        j = by_id[by_score[pos]]
        out_s[pos] = cs[j]
        out_i[pos] = ci[j]


@numba.njit(cache=True, parallel=True)
def search_all(queries, layout, forward, k, threshold, batch, n_chunks, out):
    """Every query of ``queries`` = ``(indptr, indices, values)`` in ``n_chunks`` contiguous
    chunks in parallel: one at a time (:func:`search_one`) with ``batch == 1``, else
    :func:`search_range` ``batch`` at a time."""
    q_ptr, q_idx, q_val = queries
    out_s, out_i, out_post = out
    nq = q_ptr.shape[0] - 1
    ptr, rows, codes = layout[0], layout[1], layout[2]
    block = layout[6]
    if ptr.shape[0] > 0:
        nnz = ptr[ptr.shape[0] - 1, ptr.shape[1] - 1]
        if rows.shape[0] < nnz + _LANES or codes.shape[0] < nnz + _LANES:
            raise ValueError(
                "the layout's postings lack the 16 zero postings after the last that a vector "
                "step may read: build the layout with build_layout"
            )
    for c in numba.prange(n_chunks):
        lo = c * nq // n_chunks
        hi = (c + 1) * nq // n_chunks
        if batch > 1:
            search_range(queries, lo, hi, layout, forward, k, threshold, batch, out)
            continue
        scratch = (
            np.zeros((1, block), np.float32),
            np.zeros((1, block), np.uint8),
            np.empty((1, block), np.int64),
            np.zeros(layout[5], np.float32),
            np.empty((1, _buffer_size(k, block)), np.float32),
            np.empty((1, _buffer_size(k, block)), np.int64),
        )
        for q in range(lo, hi):
            a, b = q_ptr[q], q_ptr[q + 1]
            out_post[q] = search_one(
                q_idx[a:b], q_val[a:b], layout, forward, k, threshold, scratch, out_s[q], out_i[q]
            )
