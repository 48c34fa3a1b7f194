// Cap'n Proto messages on the wire: the standard segment-table encoding, but decoded by
// our own bounded parser (DESIGN: capnp 0.9.2's stream reader must not see hostile
// input; the 2026 advisory's segment count 0xFFFFFFFF overflow). The result is handed
// to capnp::SegmentArrayMessageReader with per-method ReaderOptions.
#pragma once

#include "sealrpc/message.hpp"

#include <capnp/message.h>

#include <cstddef>
#include <span>
#include <vector>

namespace sealrpc::wire {

// Bytes the message will take on the wire (segment table + segments).
std::size_t encoded_size(capnp::MessageBuilder& msg);
// Appends the encoded message to `out`.
void append_message(std::vector<std::byte>& out, capnp::MessageBuilder& msg);
// Writes the encoded message to `out`, which has room for encoded_size(msg) bytes.
void write_message(std::byte* out, capnp::MessageBuilder& msg);
// Writes the encoded message at offset 0 of `fd` (pwrite: table, then each segment).
void write_message_to_fd(int fd, capnp::MessageBuilder& msg);
// Validates the segment table (count bounded, sizes overflow-checked, sum equal to the
// payload) and copies the message into word-aligned storage. Throws ProtocolError-free
// std::invalid_argument with a safe message on malformed input.
// `wipe`: zero the copy when the message is destroyed (a copy of a peer's memfd).
IncomingMessage decode_message(std::span<const std::byte> payload, ReaderLimits limits, bool wipe = false);
// Zero copy: validates the table and reads the segments where they are (word-aligned,
// e.g. a read-only mapping of an immutable memfd); `keep` keeps the bytes alive.
IncomingMessage decode_message_in_place(std::span<const std::byte> bytes, std::shared_ptr<const void> keep,
                                        ReaderLimits limits);

}  // namespace sealrpc::wire
