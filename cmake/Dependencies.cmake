# Every third-party dependency comes from Debian 12's packages (see README).
find_package(Threads REQUIRED)
find_package(CLI11 CONFIG REQUIRED)
find_package(spdlog CONFIG REQUIRED)
find_package(OpenSSL 3 REQUIRED)
find_package(Boost 1.81 REQUIRED)
find_package(nlohmann_json 3 CONFIG REQUIRED)
find_package(Protobuf 3.21 REQUIRED)
find_package(tomlplusplus 3 CONFIG REQUIRED) # the fleet configuration of PKCS#11 members
if(PRELOADRUN_TESTS)
  find_package(doctest CONFIG REQUIRED)
  include(doctest)
endif()

# libprotobuf-lite: the wire schema uses optimize_for = LITE_RUNTIME.
if(NOT TARGET protobuf::libprotobuf-lite)
  message(FATAL_ERROR "protobuf-lite not found (install libprotobuf-dev)")
endif()
