#pragma once
// The wire codec: the protobuf messages of wire.proto <-> bytes and <-> the
// backend-neutral types of preloadrun/hsm/types.hpp. Pure: no I/O. Decoding
// never trusts its input: every malformed message throws Error(protocol) and
// nothing else. Private to the two sides of the wire, the hsmsim client
// (src/hsm) and hsmsim (src/sim): it exposes the generated wire.pb.h.

#include "preloadrun/common/error.hpp"
#include "preloadrun/hsm/types.hpp"
#include "wire.pb.h"

#include <span>

namespace preloadrun::hsm::codec {

inline constexpr std::uint32_t kProtocolVersion = 4;

Bytes encode(const wire::Request& request);
Bytes encode(const wire::ServerMessage& message);
// Throw Error(protocol) for bytes that do not parse, or a Request/ServerMessage
// with no body set.
wire::Request decode_request(std::span<const std::uint8_t> bytes);
// The same into a request of the caller's, which after a failure may hold
// part of the input (a passphrase decoded before the error): for a caller
// that wipes the secrets of `into` however decoding ends.
void decode_request(std::span<const std::uint8_t> bytes, wire::Request& into);
wire::ServerMessage decode_server_message(std::span<const std::uint8_t> bytes);

// Conversions. from_wire throws Error(protocol) for unknown enum values.
wire::ModuleState to_wire(ModuleState state);
ModuleState from_wire(wire::ModuleState state);
wire::TokenType to_wire(TokenType type);
TokenType from_wire(wire::TokenType type);
wire::KeyType to_wire(KeyType type);
KeyType from_wire(wire::KeyType type);
wire::Hash to_wire(Hash hash);
Hash from_wire(wire::Hash hash);
wire::Mechanism to_wire(const Mechanism& mech);
Mechanism from_wire(const wire::Mechanism& mech);
wire::ModuleInfo to_wire(const ModuleInfo& info);
ModuleInfo from_wire(const wire::ModuleInfo& info);
wire::TokenInfo to_wire(const TokenInfo& info);
TokenInfo from_wire(const wire::TokenInfo& info);
wire::KeyInfo to_wire(const KeyInfo& info);
KeyInfo from_wire(const wire::KeyInfo& info);
wire::Event to_wire(const ModuleEvent& event);
ModuleEvent from_wire(const wire::Event& event);

// Errors cross the wire as (code, message): every code as itself (its wire
// value is in error_table.def); a code this build does not know reads as
// ErrorCode::internal rather than throwing. An Error decoded from an error
// reply has Origin::peer: the service said it.
wire::ErrorCode to_wire(ErrorCode code);
ErrorCode from_wire(wire::ErrorCode code);
Error from_wire(const wire::Error& error);
wire::Response error_response(std::uint64_t id, const Error& error);

} // namespace preloadrun::hsm::codec
