#pragma once
// Every wire request the service answers, described once (as p11-kit
// describes its calls in one table): its name for logs, whether only the
// admin socket may send it, the secret it carries (a passphrase, wiped once
// the request has been handled) and the function that answers it. The
// handler (handler.hpp) and the connections (served_connection.hpp) read this
// table and nothing else about the kinds of request: a new request is a
// message in wire.proto and one row here, with its answer.

#include "model/catalog.hpp"
#include "model/destroyer.hpp"
#include "model/fleet.hpp"
#include "server/clients.hpp"
#include "server/paging.hpp"
#include "wire.pb.h"

#include <span>
#include <string>
#include <string_view>
#include <sys/types.h>
#include <vector>

namespace preloadrun::sim {

// Who sent a request: the peer credentials of its connection.
struct Peer {
    uid_t uid = 0;
    pid_t pid = 0;
    bool admin = false;          // connected on the admin socket
    ClientId client = kNoClient; // set by Handler::attach(): owns what it loads
};

// What the answers use (the handler's).
struct RequestContext {
    Catalog& catalog;
    Fleet& fleet;
    Destroyer* destroyer; // null: keys and tokens are not destroyed through the service
    Clients& clients;
    PageLimits pages;
};

struct RequestKind {
    wire::Request::BodyCase body;
    std::string_view name; // for logs and messages: "LoadToken"
    bool admin;            // only on the admin socket (HSMSIM_ADMIN_SOCKET)
    // The secret the request carries, to be wiped; null: it carries none.
    std::string* (*secret)(wire::Request& request);
    // Fills `out` with the answer, or throws preloadrun::Error.
    void (*answer)(const RequestContext& services, const wire::Request& request, const Peer& peer,
                   wire::Response& out);
};

// The row of the request's kind; null for a request without a body.
const RequestKind* request_kind(const wire::Request& request);
// Every row, in the order of wire.proto.
std::span<const RequestKind> request_kinds();

// The body of ListModules' answer (and of Subscribe's first one): every module.
void set_modules(wire::Response& response, const std::vector<hsm::ModuleInfo>& modules);

// Whether a request may only come over the admin socket.
bool is_admin_request(const wire::Request& request);
// A short name for logs: "LoadToken", "Sign", ...; "(empty request)".
std::string_view request_name(const wire::Request& request);
// Overwrites the secrets a request carries (once it has been handled).
void wipe_secrets(wire::Request& request);

// "hsmsim 0.1.0"
std::string server_name();

} // namespace preloadrun::sim
