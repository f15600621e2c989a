# End-to-end tests of the `vae` command line (Python, Debian's /usr/bin/python3).
if(VAE_PYTHON)
  foreach(t train_mnist resume failures sample lr_schedule)
    add_test(NAME cli_${t} COMMAND ${VAE_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/cli/test_${t}.py)
    set_tests_properties(cli_${t} PROPERTIES SKIP_RETURN_CODE 77 LABELS slow
                         ENVIRONMENT "VAE_BIN=$<TARGET_FILE:vae>;VAE_SOURCE_DIR=${CMAKE_SOURCE_DIR}")
  endforeach()
endif()
