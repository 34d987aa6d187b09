/* SPDX-License-Identifier: (GPL-2.0 WITH Linux-syscall-note) OR MIT */
/*
 * Userspace interface of the ivshmem guest driver: /dev/ivshmemN, one per ivshmem PCI device
 * (1af4:1110, plain or doorbell).
 *
 * mmap offsets select what is mapped (both need MAP_SHARED):
 *   IVSHMEM_SHM_MMAP_OFFSET   the shared memory (BAR2), write-back cached;
 *   IVSHMEM_REGS_MMAP_OFFSET  the register page (BAR0), uncached; the doorbell register at
 *                             IVSHMEM_REG_DOORBELL rings a peer with one 32-bit store of
 *                             (peer << 16) | vector. Only when IVSHMEM_INFO_REGS_MMAP is set.
 * poll() reports EPOLLHUP | EPOLLERR once the device is gone (unbound, unplugged); ioctls then
 * fail with ENODEV, and existing mappings show a private scratch page instead of the device.
 */
#ifndef IVSHMEM_UAPI_H
#define IVSHMEM_UAPI_H

#include <linux/const.h>
#include <linux/ioctl.h>
#include <linux/types.h>

#define IVSHMEM_SHM_MMAP_OFFSET 0ULL
#define IVSHMEM_REGS_MMAP_OFFSET _BITULL(40)

/* Registers in BAR0 (the device's own layout). */
#define IVSHMEM_REG_INTR_MASK 0x00
#define IVSHMEM_REG_INTR_STATUS 0x04
#define IVSHMEM_REG_IV_POSITION 0x08
#define IVSHMEM_REG_DOORBELL 0x0c

/* ivshmem_info.flags */
#define IVSHMEM_INFO_REGS_MMAP _BITUL(0) /* the register page can be mmap'd */

struct ivshmem_info {
	__u64 shm_size;		/* bytes of shared memory (BAR2) */
	__u64 shm_offset;	/* its mmap offset: IVSHMEM_SHM_MMAP_OFFSET */
	__u64 regs_offset;	/* the register page's mmap offset: IVSHMEM_REGS_MMAP_OFFSET */
	__u32 regs_size;	/* bytes of registers (BAR0) */
	__s32 iv_position;	/* our peer id as the device reports it (IVPosition) */
	__u32 vectors;		/* MSI-X vectors enabled: 0 for ivshmem-plain */
	__u32 flags;		/* IVSHMEM_INFO_* */
};

/*
 * Binds an eventfd to one of our vectors (fd = -1 unbinds). Each interrupt on the vector adds
 * to the eventfd. Interrupts that arrive while no eventfd is bound are remembered (as one) and
 * signalled when one is bound. A vector is bound by one open file at a time (EBUSY for others);
 * closing the file unbinds it.
 */
struct ivshmem_eventfd {
	__u32 vector;
	__s32 fd;
};

/* Rings vector `vector` of peer `peer` through the doorbell register (both at most 0xffff). */
struct ivshmem_ring {
	__u32 peer;
	__u32 vector;
};

#define IVSHMEM_IOCTL_MAGIC 0xB9 /* free in Documentation/userspace-api/ioctl/ioctl-number.rst */
#define IVSHMEM_IOCTL_INFO _IOR(IVSHMEM_IOCTL_MAGIC, 0x00, struct ivshmem_info)
#define IVSHMEM_IOCTL_SET_EVENTFD _IOW(IVSHMEM_IOCTL_MAGIC, 0x01, struct ivshmem_eventfd)
#define IVSHMEM_IOCTL_RING _IOW(IVSHMEM_IOCTL_MAGIC, 0x02, struct ivshmem_ring)

#endif /* IVSHMEM_UAPI_H */
