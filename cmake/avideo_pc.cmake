# Install-time half of cmake/embed.cmake: write avideo.pc for the prefix
# being installed to. Module dirs given as absolute paths (luarocks gives
# its tree's) are kept; relative ones are under the prefix.
set(AVIDEO_PC_PREFIX "${CMAKE_INSTALL_PREFIX}")
foreach(kind CMOD LMOD)
  if(NOT IS_ABSOLUTE "${AVIDEO_PC_${kind}}")
    set(AVIDEO_PC_${kind} "\${prefix}/${AVIDEO_PC_${kind}}")
  endif()
endforeach()
configure_file("${AVIDEO_PC_IN}" "${AVIDEO_PC_OUT}" @ONLY)
