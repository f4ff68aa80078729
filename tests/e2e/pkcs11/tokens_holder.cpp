// Test helper standing in for preloadrun: loads a softcard onto every usable
// module, publishes a tokens file (holding its lock, like preloadrun), and
// then obeys one command per line on stdin:
//   publish   reload the token on modules that are new or whose generation
//             changed, then publish the file again (generation + 1)
//   bogus N   publish a handle for module N that does not exist there (a
//             reload onto N then keeps failing)
//   die       exit at once without cleaning up (leaves a stale file)
//   quit      remove the file and its lock, exit 0
// Prints "ready <generation>" after each publication.
//
//   tokens_holder FILE SOCKET TOKEN_NAME PASSPHRASE_FILE

#include "preloadrun/common/bytes.hpp"
#include "preloadrun/common/files.hpp"
#include "preloadrun/common/process.hpp"
#include "preloadrun/common/secure_buffer.hpp"
#include "preloadrun/hsm/sim_client.hpp"
#include "preloadrun/tokens/publisher.hpp"

#include <cstdio>
#include <iostream>
#include <map>
#include <string>
#include <unistd.h>

using namespace preloadrun;

int main(int argc, char** argv) {
    if (argc != 5) {
        std::cerr << "usage: tokens_holder FILE SOCKET TOKEN_NAME PASSPHRASE_FILE\n";
        return 2;
    }
    try {
        hsm::Endpoint endpoint{argv[2], std::chrono::seconds(10), "tokens_holder"};
        hsm::SimClient client(endpoint);
        const std::string name = argv[3];
        const auto pass_bytes = read_file(argv[4]);
        const SecureBuffer passphrase(pass_bytes.data(), pass_bytes.size());
        std::optional<hsm::TokenInfo> token;
        for (const auto& t : client.tokens()) {
            if (t.name == name) {
                token = t;
            }
        }
        if (!token) {
            std::cerr << "no token " << name << "\n";
            return 1;
        }
        tokens::Publisher publisher(argv[1]);
        tokens::TokensFile file;
        file.owner = tokens::Owner{self_identity(), tokens::new_instance_id()};
        file.world = to_hex(client.world_id());
        file.service_instance = to_hex(client.instance());
        std::map<std::uint32_t, tokens::Loaded> loaded;

        auto publish = [&] {
            file.modules.clear();
            for (const auto& m : client.modules()) {
                file.modules.push_back(
                    tokens::Module{m.number, m.esn, *tokens::module_state_named(to_string(m.state)),
                                   m.generation, 0, 0, false});
                if (m.state != hsm::ModuleState::usable) {
                    loaded.erase(m.number);
                    continue;
                }
                auto it = loaded.find(m.number);
                if (it != loaded.end() && it->second.module_generation == m.generation) {
                    continue;
                }
                const auto handle = client.load_token(m.number, token->hash, passphrase);
                loaded[m.number] = tokens::Loaded{m.number, m.esn, m.generation, handle};
            }
            tokens::Token t{tokens::TokenType::softcard, token->name, to_hex(token->hash), {}};
            for (const auto& [number, l] : loaded) {
                t.loaded.push_back(l);
            }
            file.tokens = {t};
            publisher.publish(file);
            std::cout << "ready " << publisher.generation() << std::endl;
        };

        publish();
        std::string line;
        while (std::getline(std::cin, line)) {
            if (line == "publish") {
                publish();
            } else if (line.rfind("bogus ", 0) == 0) {
                const auto module = static_cast<std::uint32_t>(std::stoul(line.substr(6)));
                loaded[module].handle = 999999;
                tokens::Token t{tokens::TokenType::softcard, token->name, to_hex(token->hash), {}};
                for (const auto& [number, l] : loaded) {
                    t.loaded.push_back(l);
                }
                file.tokens = {t};
                publisher.publish(file);
                std::cout << "ready " << publisher.generation() << std::endl;
            } else if (line == "die") {
                std::cout.flush();
                ::_exit(3);
            } else if (line == "quit") {
                break;
            }
        }
        publisher.remove();
        return 0;
    } catch (const std::exception& e) {
        std::cerr << "tokens_holder: " << e.what() << "\n";
        return 1;
    }
}
