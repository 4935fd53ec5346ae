# CPack pre-build script: Debian ships manual pages compressed with gzip -9n
# (no name or time stamp in the header, so the package is reproducible). Runs
# on the staging tree after the install step and before the .deb is made.
file(GLOB_RECURSE _pages "${CPACK_TEMPORARY_INSTALL_DIRECTORY}/*/share/man/man*/*.[1-9]")
find_program(_gzip gzip REQUIRED)
foreach(_p IN LISTS _pages)
  execute_process(COMMAND "${_gzip}" -9nf "${_p}" RESULT_VARIABLE _rc)
  if(NOT _rc EQUAL 0)
    message(FATAL_ERROR "compress-man: gzip ${_p} failed (${_rc})")
  endif()
endforeach()
