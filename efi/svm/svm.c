/*
 * svm.c - the AMD-V backend slot.  Not written yet: the ops table exists so
 * that vendor selection stays in one place (efi/core/vmm.c) and the core's
 * CPUID/MSR/XSETBV/hypercall handling is ready for it.
 */
#include "../core/hv_core.h"

static int svm_global_init(void)
{
    hv_log("HV: skip reason=svm-backend-not-built\n");
    return -1;
}

const struct hv_backend_ops svm_ops = {
    .name = "svm",
    .global_init = svm_global_init,
};
