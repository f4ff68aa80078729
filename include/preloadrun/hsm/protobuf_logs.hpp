#pragma once
// The one part of the wire codec a program's main needs. The codec itself
// (src/wire) is private to the hsmsim client and hsmsim: no generated
// protobuf header is reachable from here.

namespace preloadrun::hsm::codec {

// libprotobuf writes its complaints about malformed input (e.g. a string that
// is not UTF-8) to stderr; this sends them to the "hsm" logger at debug level
// instead (such input already becomes Error(protocol)). For programs only,
// called once before any thread starts: the handler is process-wide, and the
// PKCS#11 module must not take it from the application.
void route_protobuf_logs();

} // namespace preloadrun::hsm::codec
