#include "server/requests.hpp"

#include <doctest/doctest.h>
#include <set>
#include <string>

using namespace preloadrun;
using namespace preloadrun::sim;

TEST_CASE("sim::request_kinds: one row per kind of request, each named and answered") {
    std::set<int> bodies;
    std::set<std::string_view> names;
    for (const auto& kind : request_kinds()) {
        CAPTURE(kind.name);
        CHECK(kind.body != wire::Request::BODY_NOT_SET);
        CHECK(bodies.insert(kind.body).second);
        CHECK(names.insert(kind.name).second);
        CHECK_FALSE(kind.name.empty());
        CHECK(static_cast<bool>(kind.answer));
    }

    wire::Request none;
    CHECK(request_kind(none) == nullptr);
    CHECK(request_name(none) == "(empty request)");
    CHECK_FALSE(is_admin_request(none));
    wire::Request sign;
    sign.mutable_sign();
    REQUIRE(request_kind(sign) != nullptr);
    CHECK(request_kind(sign)->body == wire::Request::kSign);
    CHECK(request_name(sign) == "Sign");
}

TEST_CASE("sim::request_kinds: the admin requests and the requests with a secret") {
    std::set<std::string_view> admin;
    std::set<std::string_view> secret;
    for (const auto& kind : request_kinds()) {
        if (kind.admin) {
            admin.insert(kind.name);
        }
        if (kind.secret != nullptr) {
            secret.insert(kind.name);
        }
    }
    CHECK(admin ==
          std::set<std::string_view>{"ControlModule", "AddModule", "SetLatency", "FailNext"});
    CHECK(secret == std::set<std::string_view>{"CreateToken", "LoadToken", "GenerateKey",
                                               "ChangePassphrase"});
}

TEST_CASE("sim::wipe_secrets clears passphrases") {
    wire::Request r;
    r.mutable_load_token()->set_passphrase("secret");
    wipe_secrets(r);
    CHECK(r.load_token().passphrase().empty());
    CHECK(is_admin_request([] {
        wire::Request a;
        a.mutable_add_module();
        return a;
    }()));
    CHECK(request_name(r) == "LoadToken");

    wire::Request create;
    create.mutable_create_token()->set_name("card");
    create.mutable_create_token()->set_passphrase("another secret");
    wipe_secrets(create);
    CHECK(create.create_token().passphrase().empty());
    CHECK(create.create_token().name() == "card"); // only the secret goes

    wire::Request import;
    import.mutable_generate_key()->set_value("key material");
    import.mutable_generate_key()->set_label("kept");
    wipe_secrets(import);
    CHECK(import.generate_key().value().empty());
    CHECK(import.generate_key().label() == "kept");

    wire::Request change;
    change.mutable_change_passphrase()->set_passphrase("old secret");
    change.mutable_change_passphrase()->set_new_passphrase("new secret");
    wipe_secrets(change);
    CHECK(change.change_passphrase().passphrase().empty());
    CHECK(change.change_passphrase().new_passphrase().empty());

    wire::Request sign;
    sign.mutable_sign()->set_data("not a secret");
    wipe_secrets(sign);
    CHECK(sign.sign().data() == "not a secret");
}
