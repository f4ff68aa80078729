#include "server/handler.hpp"

#include "preloadrun/common/log.hpp"
#include "wire/codec.hpp"

namespace preloadrun::sim {

using wire::Request;
using wire::Response;

wire::Response Handler::handle(const Request& request, const Peer& peer) {
    try {
        auto response = dispatch(request, peer);
        response.set_id(request.id());
        return response;
    } catch (const Error& e) {
        log::get("sim.handler")
            ->debug("{} from uid {} pid {} failed: {}", request_name(request), peer.uid, peer.pid,
                    e.what());
        return hsm::codec::error_response(request.id(), e);
    } catch (const std::exception& e) {
        // A library failure (out of memory, ...): still one answer per request.
        log::get("sim.handler")
            ->error("{} failed unexpectedly: {}", request_name(request), e.what());
        return hsm::codec::error_response(
            request.id(), Error(ErrorCode::internal, std::string("internal error: ") + e.what()));
    }
}

Clients::Lease Handler::attach(Peer& peer) {
    auto lease = clients_.connect(peer.uid, peer.pid);
    peer.client = lease.client();
    return lease;
}

void Handler::client_gone(const Clients::Client& client) {
    if (stopping_.load(std::memory_order_acquire)) {
        return;
    }
    const auto unloaded = fleet_.unload_client(client.id);
    log::get("sim.service")
        ->log(unloaded == 0 ? spdlog::level::debug : spdlog::level::info,
              "client pid {} (uid {}) has gone: unloaded {} object(s)", client.pid, client.uid,
              unloaded);
}

std::pair<wire::Response, Fleet::Subscription> Handler::subscribe(const Request& request,
                                                                  Fleet::Listener listener) {
    auto [snapshot, subscription] = fleet_.subscribe(std::move(listener));
    Response response;
    response.set_id(request.id());
    set_modules(response, snapshot);
    return {std::move(response), std::move(subscription)};
}

wire::Response Handler::dispatch(const Request& request, const Peer& peer) {
    const auto* kind = request_kind(request);
    if (kind == nullptr) {
        throw Error(ErrorCode::protocol, "request without a body");
    }
    if (kind->admin && !peer.admin) {
        throw Error(
            ErrorCode::permission,
            std::string(kind->name) +
                " is an admin request: send it on the admin socket (HSMFLEET_ADMIN_SOCKET)");
    }
    Response out;
    kind->answer(RequestContext{catalog_, fleet_, destroyer_, clients_, pages_}, request, peer,
                 out);
    return out;
}

} // namespace preloadrun::sim
