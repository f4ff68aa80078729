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
# A program that sets its PRELOADRUN_STATIC_RUNTIME property (preloadrun: its
# start-up is a performance target) links libprotobuf-lite's archive, where
# Debian ships one, instead of its shared library. A shared object cannot:
# the archive is not built for one.
find_library(PRELOADRUN_PROTOBUF_LITE_ARCHIVE NAMES libprotobuf-lite.a)
if(PRELOADRUN_PROTOBUF_LITE_ARCHIVE)
  set(PRELOADRUN_PROTOBUF_LITE
    "$<IF:$<BOOL:$<TARGET_PROPERTY:PRELOADRUN_STATIC_RUNTIME>>,${PRELOADRUN_PROTOBUF_LITE_ARCHIVE},protobuf::libprotobuf-lite>")
else()
  set(PRELOADRUN_PROTOBUF_LITE protobuf::libprotobuf-lite)
endif()
# The same for libcrypto, which the HSM client library brings and preloadrun
# never calls: its archive on the line of a static link pulls nothing in.
find_library(PRELOADRUN_CRYPTO_ARCHIVE NAMES libcrypto.a)
if(PRELOADRUN_CRYPTO_ARCHIVE)
  set(PRELOADRUN_CRYPTO
    "$<IF:$<BOOL:$<TARGET_PROPERTY:PRELOADRUN_STATIC_RUNTIME>>,${PRELOADRUN_CRYPTO_ARCHIVE},OpenSSL::Crypto>")
else()
  set(PRELOADRUN_CRYPTO OpenSSL::Crypto)
endif()
# preloadrun as a static PIE (glibc too): only with both archives.
if(PRELOADRUN_PROTOBUF_LITE_ARCHIVE AND PRELOADRUN_CRYPTO_ARCHIVE)
  set(PRELOADRUN_CAN_LINK_STATIC ON)
else()
  set(PRELOADRUN_CAN_LINK_STATIC OFF)
endif()
