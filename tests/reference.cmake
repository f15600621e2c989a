# Whole-model parity with PyTorch: vae_refdump runs one training step of the
# engine (CPU backend, one thread) and check_reference.py recomputes the loss
# and every gradient with an independent float64 PyTorch model built from the
# same config. Skips (77) when /usr/bin/python3 has no torch. With
# $VAE_DATA_DIR set, the MNIST configs use real test images; otherwise a
# synthetic batch.
add_executable(vae_refdump ${CMAKE_CURRENT_SOURCE_DIR}/reference/refdump.c)
target_link_libraries(vae_refdump PRIVATE vae_lib)

if(VAE_PYTHON)
  set(VAE_REF_PYTHON ${VAE_PYTHON})
else()
  set(VAE_REF_PYTHON /usr/bin/python3)
endif()

foreach(cfg mnist_mlp mnist_conv cifar10_conv mnist_ae)
  add_test(NAME reference_${cfg}
           COMMAND ${VAE_REF_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/reference/check_reference.py
                   --refdump $<TARGET_FILE:vae_refdump>
                   --config ${CMAKE_SOURCE_DIR}/configs/${cfg}.ini --batch 8)
  set_tests_properties(reference_${cfg} PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 300
                       LABELS reference)
endforeach()
