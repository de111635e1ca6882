"""The device log's record format, shared by its writer (fuse_logger.py) and its reader
(replay.py); apart so that reading a log never needs libfuse.

Records back to back: one kind byte, then
``W`` offset u64, length u32, data | ``Z`` offset u64, length u64 (a zeroed range) |
``F`` (a flush) | ``M`` length u32, text (marks, one per line).  All little-endian.
"""

from __future__ import annotations

import struct

WRITE, ZERO, FLUSH, MARK = b"W", b"Z", b"F", b"M"
W_HEAD = struct.Struct("<QI")
Z_HEAD = struct.Struct("<QQ")
M_HEAD = struct.Struct("<I")
