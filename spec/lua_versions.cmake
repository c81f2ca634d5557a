# The core specs under the other Lua versions (included by spec/CMakeLists.txt).
# This build makes avideo.core once more for each version in
# AVIDEO_SPEC_LUAS (into lua-<version>/avideo/core.so) and registers
# <spec>@<version>: the same spec file, busted run by that interpreter.
#
# The specs are written for 5.4. Under an older Lua, busted loads them
# through spec/support/portable.lua (erases <close>, lends math.type), and
# where a version behaves otherwise (no integer subtype on 5.1 and LuaJIT,
# a wait refused by Lua itself on PUC 5.1, a heap budget) the test asserts
# what that version does. Only a test of what a version lacks altogether is
# left out by name with --filter-out.
set(AVIDEO_CORE_SPECS api session limits run faults json thread embed)

# busted arguments for running the 5.4 specs under version v.
function(avideo_portable_args v out)
  set(args --helper=${PROJECT_SOURCE_DIR}/spec/support/portable.lua)
  if(NOT v STREQUAL "5.4")
    # the <close> statement itself: 5.4 syntax (sessions close by :close())
    list(APPEND args "--filter-out=closed at the end of a `<close>` variable")
  endif()
  set(${out} ${args} PARENT_SCOPE)
endfunction()

if(AVIDEO_LUA STREQUAL "5.4")
  set(AVIDEO_SPEC_LUAS_DEFAULT "5.3;luajit;5.1")
else()
  set(AVIDEO_SPEC_LUAS_DEFAULT "")
endif()
set(AVIDEO_SPEC_LUAS "${AVIDEO_SPEC_LUAS_DEFAULT}" CACHE STRING
    "Other Lua versions to run the core specs under (5.3, 5.1, luajit)")

foreach(v ${AVIDEO_SPEC_LUAS})
  if(v STREQUAL "luajit")
    set(pc luajit)
    set(exe_names luajit)
  else()
    set(pc lua${v})
    set(exe_names lua${v})
  endif()
  string(REPLACE "." "" id ${v})
  # GLOBAL: examples/embed links its host programs with it too
  pkg_check_modules(LUA_${id} IMPORTED_TARGET GLOBAL ${pc})
  find_program(AVIDEO_LUA_EXE_${id} NAMES ${exe_names})
  if(NOT LUA_${id}_FOUND OR NOT AVIDEO_LUA_EXE_${id})
    message(WARNING "Lua ${v}: no ${pc} headers or interpreter; its specs are not registered (scripts/setup installs them)")
    continue()
  endif()
  set(dir ${CMAKE_BINARY_DIR}/lua-${v})
  avideo_core_for(avideo_core_${id} PkgConfig::LUA_${id} ${dir})
  add_library(avideo_faultshim_${id} MODULE support/faultshim.c)
  target_include_directories(avideo_faultshim_${id} PRIVATE ${LUA_${id}_INCLUDE_DIRS} ${UV_INCLUDE_DIRS}
                             ${CURL_INCLUDE_DIRS} ${PROJECT_SOURCE_DIR}/src/core)
  target_link_libraries(avideo_faultshim_${id} PRIVATE ${CMAKE_DL_LIBS})
  set_target_properties(avideo_faultshim_${id} PROPERTIES
    PREFIX "" OUTPUT_NAME faultshim C_VISIBILITY_PRESET default LIBRARY_OUTPUT_DIRECTORY ${dir})

  avideo_portable_args(${v} args)
  set(wrapper ${AVIDEO_SPEC_WRAPPER})
  if(v STREQUAL "luajit")
    set(wrapper ${AVIDEO_SPEC_WRAPPER_LUAJIT})
  endif()
  foreach(name ${AVIDEO_CORE_SPECS})
    add_test(NAME ${name}_spec@${v}
             COMMAND ${wrapper} ${AVIDEO_LUA_EXE_${id}} ${BUSTED} ${args} --output=utfTerminal
                     ${CMAKE_CURRENT_SOURCE_DIR}/${name}_spec.lua
             WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
    set_tests_properties(${name}_spec@${v} PROPERTIES ENVIRONMENT "${AVIDEO_SPEC_ENV}" TIMEOUT 300)
    # this version's module and shim in place of the build's own (later wins)
    set_property(TEST ${name}_spec@${v} APPEND PROPERTY ENVIRONMENT
                 "LUA_CPATH=${dir}/?.so\;\;" "AVIDEO_FAULTSHIM=$<TARGET_FILE:avideo_faultshim_${id}>"
                 "LUA=${AVIDEO_LUA_EXE_${id}}")
  endforeach()
endforeach()

# Neovim (LuaJIT-based) loads the LuaJIT module and runs avideo on its own
# loop: spec/nvim/neovim_spec.lua, itself run by busted under this build's Lua.
find_program(AVIDEO_NVIM nvim)
if(TARGET avideo_core_luajit AND AVIDEO_NVIM)
  add_test(NAME neovim_spec
           COMMAND ${AVIDEO_SPEC_WRAPPER} ${LUA54} ${BUSTED} ${AVIDEO_SPEC_ARGS} --output=utfTerminal
                   ${CMAKE_CURRENT_SOURCE_DIR}/nvim/neovim_spec.lua
           WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
  set_tests_properties(neovim_spec PROPERTIES ENVIRONMENT "${AVIDEO_SPEC_ENV}" TIMEOUT 120)
  set_property(TEST neovim_spec APPEND PROPERTY ENVIRONMENT
               "AVIDEO_LUAJIT_CPATH=${CMAKE_BINARY_DIR}/lua-luajit")
endif()
