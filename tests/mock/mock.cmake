# The mock device (tests/mock/README.md): src/host/backend_cuda.c compiled
# against the real CUDA and cuDNN headers and linked, instead of the CUDA
# libraries, with CPU implementations of the APIs it calls (mock_*.c) and the
# kernels in the emulator under their own names. test_cuda_ops_mock and
# test_cuda_train_mock are test_cuda_ops and test_cuda_train on that backend.
# Needs only the headers (no GPU, no nvcc), so it builds in the sanitizer
# passes too. Included from tests/CMakeLists.txt after the emulator's part.
find_path(VAE_MOCK_CUDA_INC cuda_runtime_api.h HINTS /usr/local/cuda/include ${CUDAToolkit_INCLUDE_DIRS})
find_path(VAE_MOCK_LT_INC cublasLt.h HINTS ${VAE_MOCK_CUDA_INC} /usr/local/cuda/include)
find_path(VAE_MOCK_CUDNN_INC cudnn.h HINTS ${VAE_MOCK_CUDA_INC} ${CUDNN_INCLUDE_DIR})
if(NOT (TARGET vae_emu AND VAE_MOCK_CUDA_INC AND VAE_MOCK_LT_INC AND VAE_MOCK_CUDNN_INC
        AND EXISTS ${CMAKE_SOURCE_DIR}/tests/mock/mock_cublas.c
        AND EXISTS ${CMAKE_SOURCE_DIR}/tests/mock/mock_cudnn.c))
  message(STATUS "mock device: not built (needs the CUDA and cuDNN headers and the emulator)")
  return()
endif()
message(STATUS "mock device: CUDA headers ${VAE_MOCK_CUDA_INC}, cuDNN ${VAE_MOCK_CUDNN_INC}")
set(mock ${CMAKE_SOURCE_DIR}/tests/mock)
set(mock_gen ${CMAKE_CURRENT_BINARY_DIR}/mock_gen)

# the kernels (and the emulator's scheduler) against the emulator's headers
vae_emu_copies(${mock_gen} mock_kernel_sources --keep-names)
add_library(vae_mock_kernels OBJECT ${mock_kernel_sources} ${emu}/emu_runtime.cpp)
target_include_directories(vae_mock_kernels BEFORE PRIVATE ${mock_gen} ${emu} ${emu}/include
                           ${CMAKE_SOURCE_DIR}/include)
target_compile_options(vae_mock_kernels PRIVATE -Wall -Wextra -Wno-unused-parameter)
if(VAE_TSAN) # emu_runtime.cpp's -fno-sanitize=thread is set where vae_emu is
  target_compile_definitions(vae_mock_kernels PRIVATE VAE_EMU_TSAN=1)
endif()

# the library: the host sources, the CUDA backend's host side, the mock APIs
add_library(vae_lib_mock STATIC ${VAE_HOST_SOURCES} ${VAE_CUDA_HOST} ${mock}/mock_cudart.c
            ${mock}/mock_cublas.c ${mock}/mock_cudnn.c $<TARGET_OBJECTS:vae_mock_kernels>)
vae_deps(vae_lib_mock)
target_include_directories(vae_lib_mock PRIVATE ${CMAKE_SOURCE_DIR}/src/kernels ${mock} ${emu}
                           ${VAE_MOCK_CUDA_INC} ${VAE_MOCK_CUDNN_INC})
target_compile_definitions(vae_lib_mock PUBLIC VAE_HAVE_CUDA=1)
target_link_libraries(vae_lib_mock PUBLIC Threads::Threads)

add_library(vae_testutil_mock STATIC ${CMAKE_CURRENT_SOURCE_DIR}/testutil.c)
target_link_libraries(vae_testutil_mock PUBLIC vae_lib_mock)
foreach(t test_cuda_ops test_cuda_train)
  add_executable(${t}_mock ${CMAKE_CURRENT_SOURCE_DIR}/${t}.c)
  target_link_libraries(${t}_mock PRIVATE vae_testutil_mock)
  target_include_directories(${t}_mock PRIVATE ${CMAKE_CURRENT_SOURCE_DIR})
  add_test(NAME ${t}_mock COMMAND ${t}_mock)
  # VAE_MOCK_LT_STRICT: a matmul given pointers less aligned than its plan
  # promised cuBLASLt aborts (mock_cublas.c) instead of being refused
  set_tests_properties(${t}_mock PROPERTIES SKIP_RETURN_CODE 77 LABELS mock
                       ENVIRONMENT "VAE_SOURCE_DIR=${CMAKE_SOURCE_DIR};VAE_MOCK_LT_STRICT=1")
endforeach()
# ~70 s per case on one core (naive GEMMs and convolutions, emulated
# kernels): two of the four cases, the dense + ReLU pairs fused both ways
# (mlp) and the convolutions (conv); scripts/test.sh leaves it out of the
# sanitizer pass, where test_cuda_ops_mock checks the host code.
set_tests_properties(test_cuda_train_mock PROPERTIES LABELS "mock;slow"
                     ENVIRONMENT "VAE_SOURCE_DIR=${CMAKE_SOURCE_DIR};VAE_TEST_CASES=mlp,conv;VAE_MOCK_LT_STRICT=1")
# ... and the conv case with the weight gradients on the side stream
# (VAE_CUDA_SIDE=1): its events, the capture it joins and leaves, the
# workspace halves; its second heuristic backend is then the one without
add_test(NAME test_cuda_train_mock_side COMMAND test_cuda_train_mock)
# (with the mock's asynchrony, in a random order: the side stream's events
# then have to order its work; see test_mock_async below)
set_tests_properties(test_cuda_train_mock_side PROPERTIES SKIP_RETURN_CODE 77 LABELS "mock;slow"
                     ENVIRONMENT "VAE_SOURCE_DIR=${CMAKE_SOURCE_DIR};VAE_TEST_CASES=conv;VAE_CUDA_SIDE=1;VAE_MOCK_ASYNC=random:1")
# test_cuda_ops_mock again with cuBLASLt refusing: no algorithm for any
# epilogue (every dense layer on its fallback), no algorithm for the ReLU
# epilogues only (bias epilogues, ReLU fallbacks), and the matmul call itself
# refused after a plan was made (the fallback at call time); and with the
# opt-in ReLU mask + DRELU_BGRAD backward (VAE_LT_DRELU=1, off by default);
# and with cuDNN alone for the convolutions (the direct kernels and the GEMM
# forms off: otherwise a plan whose cuDNN pick failed could hide behind them)
# test_cuda_ops_mock_<name> with the environment variables VAR=VALUE ... added
function(mock_ops_variant name)
  add_test(NAME test_cuda_ops_mock_${name} COMMAND test_cuda_ops_mock)
  set_tests_properties(test_cuda_ops_mock_${name} PROPERTIES SKIP_RETURN_CODE 77 LABELS mock
                       ENVIRONMENT "VAE_SOURCE_DIR=${CMAKE_SOURCE_DIR};${ARGN}")
endfunction()
mock_ops_variant(lt_none VAE_MOCK_LT_REFUSE=all)
mock_ops_variant(relu_none VAE_MOCK_LT_REFUSE=RELU_AUX_BIAS,RELU_BIAS,DRELU_BGRAD)
mock_ops_variant(lt_call_refused VAE_MOCK_LT_REFUSE_MATMUL=all)
mock_ops_variant(drelu VAE_LT_DRELU=1)
# ... with the searches listing a faster non-deterministic or too-large
# algorithm first (VAE_MOCK_CUDNN_TRAP, mock_cudnn.c), by timing and by
# cuDNN's heuristics: the backend's filters must pass them over
# (and, cuDNN rounding to TF32 under tensor-op math, a TF32 run must differ
# from the fp32 one: VAE_TEST_TF32_DIFFERS, test_precision_switch)
mock_ops_variant(cudnn_only VAE_CONV_DIRECT=0 VAE_CONV_GEMM=0 VAE_MOCK_CUDNN_TRAP=1
                 VAE_TEST_TF32_DIFFERS=1)
mock_ops_variant(cudnn_heuristic VAE_CONV_DIRECT=0 VAE_CONV_GEMM=0 VAE_MOCK_CUDNN_TRAP=1
                 VAE_CUDNN_ALGO=heuristic VAE_TEST_TF32_DIFFERS=1)

foreach(t mock_cublas mock_cudnn)
  if(EXISTS ${mock}/test_${t}.c)
    add_executable(test_${t} ${mock}/test_${t}.c ${mock}/${t}.c)
    target_include_directories(test_${t} PRIVATE ${mock} ${VAE_MOCK_CUDA_INC} ${VAE_MOCK_CUDNN_INC})
    target_link_libraries(test_${t} PRIVATE m)
    add_test(NAME test_${t} COMMAND test_${t})
    set_tests_properties(test_${t} PROPERTIES LABELS mock)
  endif()
endforeach()

# A stream capture after an illegal call invalidated it, on the mock runtime
# (test_mock_capture); the same program against the real runtime is
# test_capture_invalidated in CUDA builds (tests/CMakeLists.txt), so a GPU
# run shows whether the mock models it.
add_executable(test_mock_capture ${mock}/test_capture_invalidated.c)
target_link_libraries(test_mock_capture PRIVATE vae_lib_mock)
target_include_directories(test_mock_capture PRIVATE ${mock} ${emu} ${VAE_MOCK_CUDA_INC})
target_compile_definitions(test_mock_capture PRIVATE VAE_TEST_MOCK=1)
add_test(NAME test_mock_capture COMMAND test_mock_capture)
set_tests_properties(test_mock_capture PROPERTIES SKIP_RETURN_CODE 77 LABELS mock)

# The mock runtime's asynchrony ($VAE_MOCK_ASYNC, mock_cudart.c): queued work
# runs only when the host has to see it (test_mock_async), and the CUDA
# backend's tests again with it, lazy and at random: a missing wait between
# streams, or between the device and the host, then reads a stale value.
add_executable(test_mock_async ${mock}/test_mock_async.c)
target_link_libraries(test_mock_async PRIVATE vae_lib_mock)
target_include_directories(test_mock_async PRIVATE ${mock} ${emu} ${VAE_MOCK_CUDA_INC})
add_test(NAME test_mock_async COMMAND test_mock_async)
set_tests_properties(test_mock_async PROPERTIES LABELS mock)
mock_ops_variant(async_lazy VAE_MOCK_ASYNC=lazy)
mock_ops_variant(async_random VAE_MOCK_ASYNC=random:1)

# The command line on the mock device: `vae_mock ... --device cuda` runs
# training (train.c: graphs, the asynchronous read-back of the step's sums),
# eval and the streamed sampler through backend_cuda.c end to end
# (tests/cli/test_cuda_mock.py, eagerly and with the mock's asynchrony).
add_executable(vae_mock ${CMAKE_SOURCE_DIR}/src/host/main.c)
target_link_libraries(vae_mock PRIVATE vae_lib_mock)
target_compile_definitions(vae_mock PRIVATE VAE_VERSION="${PROJECT_VERSION}")
if(VAE_PYTHON AND EXISTS ${CMAKE_SOURCE_DIR}/tests/cli/test_cuda_mock.py)
  add_test(NAME cli_cuda_mock COMMAND ${VAE_PYTHON} ${CMAKE_SOURCE_DIR}/tests/cli/test_cuda_mock.py)
  set_tests_properties(cli_cuda_mock PROPERTIES SKIP_RETURN_CODE 77 LABELS "mock;slow"
                       ENVIRONMENT "VAE_BIN=$<TARGET_FILE:vae_mock>;VAE_SOURCE_DIR=${CMAKE_SOURCE_DIR}")
endif()
