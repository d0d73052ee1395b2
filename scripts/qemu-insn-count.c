/*
 * A qemu-user TCG plugin that counts the guest instructions a program executes, for
 * scripts/arm-insn-count.sh. Debian's qemu-user 7.2 takes plugins (-plugin) but ships none, so the
 * script builds this one with the host's cc. Written against the plugin API of qemu 7.2 (version 1):
 * only the calls below are declared, so no qemu headers are needed.
 *
 * Every translated block gets a callback that adds its instruction count to one atomic counter:
 * slower than qemu's inline add, but exact with several guest threads (lookout's capture, dispatcher
 * and engine threads are vCPUs of their own under qemu-user). At exit it prints "insns: N" through
 * qemu's log (-d plugin -D FILE).
 */
#include <inttypes.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef uint64_t qemu_plugin_id_t;
struct qemu_plugin_tb;
struct qemu_info_t;
enum qemu_plugin_cb_flags { QEMU_PLUGIN_CB_NO_REGS, QEMU_PLUGIN_CB_R_REGS, QEMU_PLUGIN_CB_RW_REGS };

void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id,
                                           void (*cb)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb));
void qemu_plugin_register_vcpu_tb_exec_cb(struct qemu_plugin_tb *tb, void (*cb)(unsigned int vcpu, void *udata),
                                          enum qemu_plugin_cb_flags flags, void *udata);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, void (*cb)(qemu_plugin_id_t id, void *udata), void *udata);
void qemu_plugin_outs(const char *string);

__attribute__((visibility("default"))) int qemu_plugin_version = 1;

static _Atomic uint64_t executed;

static void on_exec(unsigned int vcpu, void *n) {
    (void)vcpu;
    atomic_fetch_add_explicit(&executed, (uint64_t)(uintptr_t)n, memory_order_relaxed);
}

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
    (void)id;
    qemu_plugin_register_vcpu_tb_exec_cb(tb, on_exec, QEMU_PLUGIN_CB_NO_REGS,
                                         (void *)(uintptr_t)qemu_plugin_tb_n_insns(tb));
}

static void on_exit(qemu_plugin_id_t id, void *udata) {
    (void)id;
    (void)udata;
    char line[64];
    snprintf(line, sizeof line, "insns: %" PRIu64 "\n", atomic_load(&executed));
    qemu_plugin_outs(line);
}

__attribute__((visibility("default"))) int qemu_plugin_install(qemu_plugin_id_t id, const struct qemu_info_t *info,
                                                               int argc, char **argv) {
    (void)info;
    (void)argc;
    (void)argv;
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    qemu_plugin_register_atexit_cb(id, on_exit, NULL);
    return 0;
}
