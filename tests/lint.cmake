# Source rules of src/kernels that programmatic dependent launch relies on
# (tests/lint_kernels.py): every kernel begins with VAE_PDL_ENTRY(), every
# launch goes through vae_launch. The lint_kernels_finds_* tests run the same
# check on tests/emu/selftest.cu, whose kernels break both rules on purpose,
# so that a lint that stopped finding anything would show.
if(VAE_PYTHON)
  set(lint ${VAE_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/lint_kernels.py)
  add_test(NAME lint_kernels COMMAND ${lint} ${CMAKE_SOURCE_DIR}/src/kernels)
  add_test(NAME lint_kernels_finds_entry COMMAND ${lint} ${CMAKE_CURRENT_SOURCE_DIR}/emu)
  set_tests_properties(lint_kernels_finds_entry PROPERTIES PASS_REGULAR_EXPRESSION
                       "selftest.cu:[0-9]+: kernel pdl_early_exit_kernel does not begin with")
  add_test(NAME lint_kernels_finds_chevron COMMAND ${lint} ${CMAKE_CURRENT_SOURCE_DIR}/emu)
  set_tests_properties(lint_kernels_finds_chevron PROPERTIES PASS_REGULAR_EXPRESSION
                       "selftest.cu:[0-9]+: a triple-chevron launch")
endif()
