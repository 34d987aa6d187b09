/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The in-kernel side of the ivshmem module: another module (virtio_ivshmem) registers as the one
 * client, is told about every ivshmem device as it comes and goes, and borrows the shared memory,
 * the doorbell and MSI-X vectors that no program has bound an eventfd to.
 */
#ifndef IVSHMEM_KERNEL_H
#define IVSHMEM_KERNEL_H

#include <linux/device.h>
#include <linux/types.h>

struct ivshmem_dev;

struct ivshmem_client {
	/* Called for each device present at registration and each one probed later. */
	void (*add)(struct ivshmem_dev *idev);
	/*
	 * Called before a device goes (unbind, removal, or the client unregistering); the client
	 * stops using it before returning: the shared memory and registers go right after.
	 */
	void (*remove)(struct ivshmem_dev *idev);
};

int ivshmem_register_client(struct ivshmem_client *client);
void ivshmem_unregister_client(struct ivshmem_client *client);

/* The class device /dev/ivshmemN (a parent for the client's devices, and for messages). */
struct device *ivshmem_device(struct ivshmem_dev *idev);
/* The write-back kernel mapping of BAR2 and its size; NULL when there is none. */
void *ivshmem_shm(struct ivshmem_dev *idev, resource_size_t *len);
/* Our peer id (IVPosition). */
u32 ivshmem_peer_id(struct ivshmem_dev *idev);
unsigned int ivshmem_vectors(struct ivshmem_dev *idev);
/* Rings (peer, vector) through the doorbell register. */
void ivshmem_ring(struct ivshmem_dev *idev, u16 peer, u16 vector);
/*
 * Takes vector for the kernel: fn(data) runs in its interrupt handler (hard IRQ context).
 * -EBUSY when a program has an eventfd on it or the kernel already has it.
 */
int ivshmem_claim_vector(struct ivshmem_dev *idev, unsigned int vector,
			 void (*fn)(void *data), void *data);
/* Gives the vector back; fn is not running and will not run once this returns. */
void ivshmem_release_vector(struct ivshmem_dev *idev, unsigned int vector);
/* Waits for a running handler of vector to finish. */
void ivshmem_sync_vector(struct ivshmem_dev *idev, unsigned int vector);

#endif
