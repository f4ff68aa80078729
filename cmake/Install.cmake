# What `cmake --install` and `cpack` put where, besides the programs and the
# PKCS#11 module (src/*/CMakeLists.txt, PRELOADRUN_PKCS11_DIR) and the man
# pages (cmake/Manpages.cmake). Paths are relative to the prefix.

set(_dist "${PROJECT_SOURCE_DIR}/dist")
set(_completions "${PROJECT_SOURCE_DIR}/completions")

# preloadrun_install_by_prefix(USR_DIR OTHER_DIR FILE...): installs FILEs
# into USR_DIR when the prefix is /usr (also cpack's staging .../usr), and
# into OTHER_DIR otherwise. The choice is made at install time, because cpack
# installs with a prefix of its own.
function(preloadrun_install_by_prefix usr_dir other_dir)
  set(files "")
  foreach(file IN LISTS ARGN)
    string(APPEND files " \"${file}\"")
  endforeach()
  install(CODE "
    if(CMAKE_INSTALL_PREFIX MATCHES \"(^|/)usr/?$\")
      set(_dir \"${usr_dir}\")
    else()
      set(_dir \"${other_dir}\")
    endif()
    file(INSTALL DESTINATION \"\${CMAKE_INSTALL_PREFIX}/\${_dir}\" TYPE FILE FILES ${files})
  ")
endfunction()

# Shell completions, where each shell looks without configuration:
# bash-completion searches $XDG_DATA_DIRS (default /usr/local/share:/usr/share);
# Debian's zsh has /usr/share/zsh/vendor-completions and
# /usr/local/share/zsh/site-functions in its fpath; fish reads
# vendor_completions.d under /usr/share (and under $XDG_DATA_DIRS).
foreach(program preloadrun hsmsim)
  install(FILES "${_completions}/${program}.bash"
    DESTINATION "${CMAKE_INSTALL_DATADIR}/bash-completion/completions"
    RENAME "${program}")
endforeach()
# bash-completion looks for a file named like the command: hsmfleet's is
# hsmsim's, which completes both names.
install(FILES "${_completions}/hsmsim.bash"
  DESTINATION "${CMAKE_INSTALL_DATADIR}/bash-completion/completions" RENAME "hsmfleet")
preloadrun_install_by_prefix("${CMAKE_INSTALL_DATADIR}/zsh/vendor-completions"
  "${CMAKE_INSTALL_DATADIR}/zsh/site-functions"
  "${_completions}/_preloadrun" "${_completions}/_hsmsim")
install(FILES "${_completions}/preloadrun.fish" "${_completions}/hsmsim.fish"
  "${_completions}/hsmfleet.fish"
  DESTINATION "${CMAKE_INSTALL_DATADIR}/fish/vendor_completions.d")

# systemd units and the hsmsim system user. systemd reads units from
# /usr/lib/systemd/system and /usr/local/lib/systemd/system alike; the units
# name the programs without a path (systemd finds them in /usr/local/bin or
# /usr/bin). They are installed, not enabled.
install(FILES "${_dist}/systemd/hsmfleet.service" "${_dist}/systemd/hsmsim.service"
  "${_dist}/systemd/preloadrun@.service"
  DESTINATION "lib/systemd/system")
install(FILES "${_dist}/sysusers.d/hsmfleet.conf" "${_dist}/sysusers.d/hsmsim.conf"
  DESTINATION "lib/sysusers.d")

# Documentation and examples: the README, and a p11-kit registration of the
# module to copy into /etc/pkcs11/modules/ when wanted (not active by default:
# every p11-kit user would otherwise load the module).
install(FILES "${PROJECT_SOURCE_DIR}/README.md" DESTINATION "${CMAKE_INSTALL_DOCDIR}")
install(FILES "${_dist}/p11-kit/preloadrun.module"
  DESTINATION "${CMAKE_INSTALL_DOCDIR}/examples")

# cpack: a Debian package installing under /usr.
set(PRELOADRUN_PACKAGE_MAINTAINER "preloadrun maintainers <preloadrun@localhost>" CACHE STRING
  "Maintainer field of the Debian package")
set(CPACK_GENERATOR "DEB")
set(CPACK_PACKAGE_NAME "preloadrun")
set(CPACK_PACKAGE_VERSION "${PROJECT_VERSION}")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "${PROJECT_DESCRIPTION}")
set(CPACK_PACKAGE_CONTACT "${PRELOADRUN_PACKAGE_MAINTAINER}")
set(CPACK_PACKAGING_INSTALL_PREFIX "/usr")
set(CPACK_STRIP_FILES ON)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION "admin")
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
# The clients the documentation's examples use.
set(CPACK_DEBIAN_PACKAGE_SUGGESTS
  "bash-completion, opensc, p11-kit, gnutls-bin, libengine-pkcs11-openssl, systemd")
# postinst creates the hsmsim user; postrm says what purging keeps.
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA "${_dist}/debian/postinst;${_dist}/debian/postrm")
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
set(CPACK_DEBIAN_PACKAGE_DESCRIPTION "preloadrun loads the tokens that protect an application's keys onto every
usable HSM, keeps reloading them when an HSM is cleared, fails, comes back or
is enrolled, publishes a tokens file and supervises the application.
libpreloadrun-pkcs11 is the PKCS#11 module (load-sharing, key reloading);
hsmfleet is the HSM service in front of PKCS#11 tokens (hsmsim: simulated HSMs).")
include(CPack)
