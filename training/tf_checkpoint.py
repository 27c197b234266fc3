"""Read TensorFlow checkpoints (`PREFIX.index` + `PREFIX.data-*`) without TensorFlow.

Importing the authors' weights should not need a 500 MB dependency, and their
released files hold 7-8 GB of which a generator is a small part: this reader
parses the index (a leveldb-style SSTable of `BundleEntryProto` records, keyed
by variable name) and reads only the tensors asked for, each checked against
its CRC32C. Format: tensorflow/core/util/tensor_bundle/tensor_bundle.{h,cc}
and tensor_bundle.proto; leveldb's table_format.md for the SSTable.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48  # two block handles padded to 40 bytes, then the magic
BLOCK_TRAILER = 5  # compression type (1 byte) and a masked CRC32C (4 bytes)
DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 4: np.uint8, 5: np.int16, 6: np.int8, 9: np.int64,
          10: np.bool_, 17: np.uint16, 19: np.float16, 22: np.uint32, 23: np.uint64}  # DataType enum
NOT_A_CHECKPOINT = "{path} is not a TensorFlow checkpoint index ({why})"


@dataclass(frozen=True)
class Entry:
    """Where one tensor lies: BundleEntryProto's fields that a dense tensor uses."""

    dtype: int
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int
    crc32c: int | None


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """A protobuf / leveldb base-128 varint at `pos`: (value, next position)."""
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """A protobuf message as (field number, value) pairs: varints, fixed32/64 as ints, the rest as bytes."""
    out: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = struct.unpack_from("<Q", buf, pos)[0], pos + 8
        elif wire == 5:
            value, pos = struct.unpack_from("<I", buf, pos)[0], pos + 4
        elif wire == 2:
            n, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + n], pos + n
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        out.append((number, value))
    return out


def _shape(buf: bytes) -> tuple[int, ...]:
    """TensorShapeProto: repeated Dim (field 2) whose size is field 1."""
    dims = []
    for number, dim in _fields(buf):
        if number == 2:
            size = dict(_fields(dim)).get(1, 0)  # type: ignore[arg-type]
            dims.append(int(size))
        elif number == 3 and dim:
            raise ValueError("a tensor of unknown rank")
    return tuple(dims)


def _entry(buf: bytes) -> Entry:
    """BundleEntryProto: dtype 1, shape 2, shard_id 3, offset 4, size 5, crc32c 6, slices 7."""
    f: dict[int, int | bytes] = {}
    for number, value in _fields(buf):
        if number == 7:
            raise ValueError("partitioned (sliced) variables are not supported")
        f[number] = value
    shape = _shape(f[2]) if isinstance(f.get(2), bytes) else ()
    crc = f.get(6)
    return Entry(int(f.get(1, 0)), shape, int(f.get(3, 0)), int(f.get(4, 0)), int(f.get(5, 0)),
                 int(crc) if crc is not None else None)


def _block(data: bytes, handle: bytes) -> list[tuple[bytes, bytes]]:
    """The (key, value) records of the SSTable block a BlockHandle (offset, size varints) points at."""
    offset, pos = _varint(handle, 0)
    size, _ = _varint(handle, pos)
    block = data[offset:offset + size]
    if data[offset + size] != 0:  # the trailer's compression type; TensorFlow's bundle writer never compresses
        raise ValueError("a compressed index block")
    n_restarts = struct.unpack_from("<I", block, size - 4)[0]
    end = size - 4 - 4 * n_restarts
    records, key, pos = [], b"", 0
    while pos < end:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        n_value, pos = _varint(block, pos)
        key = key[:shared] + block[pos:pos + unshared]
        pos += unshared
        records.append((key, block[pos:pos + n_value]))
        pos += n_value
    return records


class Checkpoint:
    """One checkpoint, by the prefix TensorFlow's Saver wrote (e.g. `.../UGATIT.model-1000000`)."""

    def __init__(self, prefix: str | Path) -> None:
        prefix = Path(prefix)
        for suffix in (".index", ".meta", ".data-00000-of-00001"):  # accept any of the files for the prefix
            if prefix.name.endswith(suffix):
                prefix = prefix.with_name(prefix.name[: -len(suffix)])
        self.prefix = prefix
        index = prefix.with_name(prefix.name + ".index")
        data = index.read_bytes()
        if len(data) < FOOTER_SIZE or struct.unpack_from("<Q", data, len(data) - 8)[0] != TABLE_MAGIC:
            raise ValueError(NOT_A_CHECKPOINT.format(path=index, why="no SSTable footer"))
        footer = data[-FOOTER_SIZE:]
        _, pos = _varint(footer, 0)  # the metaindex block's handle: unused
        _, pos = _varint(footer, pos)
        index_handle = footer[pos:]
        self.entries: dict[str, Entry] = {}
        self.num_shards = 1
        for _, handle in _block(data, index_handle):
            for key, value in _block(data, handle):
                if key == b"":  # the BundleHeaderProto: num_shards 1, endianness 2 (0 little), version 3
                    header = dict(_fields(value))
                    self.num_shards = int(header.get(1, 1))  # type: ignore[arg-type]
                    if header.get(2, 0):
                        raise ValueError(f"{index}: a big-endian checkpoint")
                else:
                    self.entries[key.decode()] = _entry(value)

    def names(self) -> list[str]:
        """Every tensor's name, sorted (the index's order)."""
        return list(self.entries)

    def shape(self, name: str) -> tuple[int, ...]:
        """A tensor's shape, without reading it."""
        return self.entries[name].shape

    def read(self, name: str, check: bool = True) -> np.ndarray:
        """One tensor, read from its shard at its offset; `check` verifies its CRC32C."""
        entry = self.entries[name]
        if entry.dtype not in DTYPES:
            raise ValueError(f"{name}: TensorFlow dtype {entry.dtype} is not supported")
        shard = self.prefix.with_name(f"{self.prefix.name}.data-{entry.shard:05d}-of-{self.num_shards:05d}")
        raw = bytearray(entry.size)  # writable, so torch can take the array without a copy
        with open(shard, "rb") as f:
            f.seek(entry.offset)
            n = f.readinto(raw)
        if n != entry.size:
            raise ValueError(f"{shard} ends before {name} (truncated download?)")
        if check and entry.crc32c is not None and masked_crc32c(raw) != entry.crc32c:
            raise ValueError(f"{name}: checksum mismatch in {shard} (corrupt download?)")
        return np.frombuffer(raw, dtype=np.dtype(DTYPES[entry.dtype]).newbyteorder("<")).reshape(entry.shape)


CRC_POLY = 0x82F63B78  # CRC-32C (Castagnoli), reflected
CRC_CHUNK = 4096  # bytes per lane: the lanes' CRCs run side by side in numpy, then are chained
CRC_SEGMENT = 1 << 26  # bytes transposed at a time (bounds the extra memory)


@lru_cache(maxsize=1)
def _crc_tables() -> tuple[list[int], np.ndarray, list[list[int]]]:
    """The byte table; the two-byte table (a lane takes 16 bits a step); and the operator 'advance a CRC
    register over CRC_CHUNK zero bytes' as 4 byte tables."""
    table = np.zeros(256, dtype=np.uint32)
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ CRC_POLY if c & 1 else c >> 1
        table[i] = c

    def step(r: np.ndarray) -> np.ndarray:
        return table[r & 0xFF] ^ (r >> 8)

    table16 = step(step(np.arange(1 << 16, dtype=np.uint32)))
    r = (np.uint32(1) << np.arange(32, dtype=np.uint32)).astype(np.uint32)  # one register per bit
    for _ in range(CRC_CHUNK // 2):
        r = table16[r & 0xFFFF] ^ (r >> 16)
    bits = (np.arange(256)[:, None] >> np.arange(8)) & 1
    shift = [np.bitwise_xor.reduce(np.where(bits == 1, r[8 * k:8 * k + 8], 0).astype(np.uint32), axis=1).tolist()
             for k in range(4)]
    return table.tolist(), table16, shift


def crc32c(data: bytes) -> int:
    """CRC-32C of `data`. Byte by byte in Python would take minutes for a full generator's 1.1 GB; here
    4 KiB lanes advance together in numpy (CRCs are affine: crc(a + b) = advance(crc(a), len b) ^ raw(b))."""
    table, table16, (s0, s1, s2, s3) = _crc_tables()
    buf = np.frombuffer(data, dtype=np.uint8)
    n_full = len(buf) // CRC_CHUNK * CRC_CHUNK
    crc = 0xFFFFFFFF
    for a in range(0, n_full, CRC_SEGMENT):
        words = buf[a:min(a + CRC_SEGMENT, n_full)].view("<u2")
        lanes = words.reshape(-1, CRC_CHUNK // 2).T.copy()  # (CRC_CHUNK / 2, lanes)
        r = np.zeros(lanes.shape[1], dtype=np.uint32)
        for row in lanes:
            r = table16[(r ^ row) & 0xFFFF] ^ (r >> 16)
        for raw in r.tolist():
            crc = s0[crc & 0xFF] ^ s1[(crc >> 8) & 0xFF] ^ s2[(crc >> 16) & 0xFF] ^ s3[crc >> 24] ^ raw
    for b in buf[n_full:].tolist():
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """leveldb's masked CRC, as the bundle stores it (rotated by 15 bits plus a constant)."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF
