// SPDX-License-Identifier: GPL-2.0
/*
 * ivshmem: a character device for each QEMU-compatible inter-VM shared memory PCI device
 * (1af4:1110, ivshmem-plain and ivshmem-doorbell), so that guest programs map the shared memory
 * write-back, ring doorbells and receive their interrupts through eventfds. The interface is in
 * ivshmem_uapi.h.
 *
 * Mappings are filled page by page on fault. Removing the device (unbind, hot-unplug) marks it
 * dead under `state`, then zaps every open file's mappings: ioctls get ENODEV, poll reports a
 * hang-up, and later accesses fault again and land on a private scratch page, so a program is
 * told through its fd instead of being killed in the middle of a store. The struct lives until
 * the last file closes.
 */
#include <linux/cdev.h>
#include <linux/device.h>
#include <linux/eventfd.h>
#include <linux/fs.h>
#include <linux/idr.h>
#include <linux/interrupt.h>
#include <linux/io.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/pci.h>
#include <linux/poll.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/version.h>

#include "ivshmem_kernel.h"
#include "ivshmem_uapi.h"

#define IVSHMEM_MAX_DEVICES 256
#define IVSHMEM_REGS_BAR 0
#define IVSHMEM_SHM_BAR 2
#define IVSHMEM_MIN_REGS_SIZE 16
#define IVSHMEM_REGS_PGOFF (IVSHMEM_REGS_MMAP_OFFSET >> PAGE_SHIFT)

struct ivshmem_vector {
	spinlock_t lock;		/* trigger, owner, pending; taken in the handler */
	struct eventfd_ctx *trigger;	/* signalled on each interrupt, or NULL */
	struct file *owner;		/* the open file that bound trigger */
	bool pending;			/* fired while no eventfd was bound */
	void (*kfn)(void *data);	/* a kernel client's handler, instead of an eventfd */
	void *kdata;
	bool irq_requested;
	char name[32];
};

struct ivshmem_dev {
	struct device dev;		/* /dev/ivshmemN; its refcount owns this struct */
	struct cdev cdev;
	struct pci_dev *pdev;
	int index;
	bool enabled;
	bool regions_requested;
	bool irqs_allocated;
	void __iomem *regs;
	resource_size_t regs_start;
	resource_size_t regs_len;
	resource_size_t shm_start;
	resource_size_t shm_len;
	/* A kernel write-back mapping of BAR2: it holds the PAT memory type user mappings get. */
	void *shm_wb;
	/* The rest of BAR0's page, claimed so that no other device's registers share the page. */
	struct resource regs_page_rest;
	bool regs_mmap;
	/* What every mapped page becomes once the device is gone. */
	struct page *scratch;

	struct rw_semaphore state;	/* writer: removal; readers: users of the BARs */
	bool dead;
	wait_queue_head_t hangup;
	struct mutex files_lock;	/* files */
	struct list_head files;		/* struct ivshmem_file, for zapping mappings on removal */
	struct list_head node;		/* ivshmem_devices, under ivshmem_clients_lock */

	unsigned int nvectors;
	struct ivshmem_vector vectors[];
};

struct ivshmem_file {
	struct list_head node;
	struct file *file;
	struct ivshmem_dev *idev;
};

static dev_t ivshmem_devt;
static DEFINE_IDA(ivshmem_ida);
/* The devices probed and the one in-kernel client (ivshmem_kernel.h). */
static DEFINE_MUTEX(ivshmem_clients_lock);
static LIST_HEAD(ivshmem_devices);
static struct ivshmem_client *ivshmem_client;

static struct ivshmem_dev *to_ivshmem(struct device *dev)
{
	return container_of(dev, struct ivshmem_dev, dev);
}

/* Out of tree: built against several kernels, so the API changes are bridged here. */
static void ivshmem_signal(struct eventfd_ctx *ctx)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 8, 0)
	eventfd_signal(ctx);
#else
	eventfd_signal(ctx, 1);
#endif
}

static void ivshmem_set_vm_flags(struct vm_area_struct *vma, unsigned long flags)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 3, 0)
	vm_flags_set(vma, flags);
#else
	vma->vm_flags |= flags;
#endif
}

/* sysfs: /sys/class/ivshmem/ivshmemN/{iv_position,shm_size,vectors,pci_address} */

static ssize_t iv_position_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	/* Attributes exist only while the device is registered, so regs is mapped. */
	return sysfs_emit(buf, "%d\n",
			  (s32)ioread32(to_ivshmem(dev)->regs + IVSHMEM_REG_IV_POSITION));
}
static DEVICE_ATTR_RO(iv_position);

static ssize_t shm_size_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%llu\n", (unsigned long long)to_ivshmem(dev)->shm_len);
}
static DEVICE_ATTR_RO(shm_size);

static ssize_t vectors_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%u\n", to_ivshmem(dev)->nvectors);
}
static DEVICE_ATTR_RO(vectors);

static ssize_t pci_address_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%s\n", pci_name(to_ivshmem(dev)->pdev));
}
static DEVICE_ATTR_RO(pci_address);

static struct attribute *ivshmem_attrs[] = {
	&dev_attr_iv_position.attr,
	&dev_attr_shm_size.attr,
	&dev_attr_vectors.attr,
	&dev_attr_pci_address.attr,
	NULL,
};
ATTRIBUTE_GROUPS(ivshmem);

static struct class ivshmem_class = {
	.name = "ivshmem",
	.dev_groups = ivshmem_groups,
};

/* Interrupts */

static irqreturn_t ivshmem_irq(int irq, void *data)
{
	struct ivshmem_vector *v = data;

	spin_lock(&v->lock);
	if (v->kfn)
		v->kfn(v->kdata);
	else if (v->trigger)
		ivshmem_signal(v->trigger);
	else
		v->pending = true;
	spin_unlock(&v->lock);
	return IRQ_HANDLED;
}

/* Binds ctx (NULL: unbinds) for file; EBUSY when another file holds the vector. */
static int ivshmem_bind(struct ivshmem_vector *v, struct file *file, struct eventfd_ctx *ctx)
{
	struct eventfd_ctx *old;

	spin_lock_irq(&v->lock);
	if (v->kfn || (v->owner && v->owner != file)) {
		spin_unlock_irq(&v->lock);
		return -EBUSY;
	}
	old = v->trigger;
	v->trigger = ctx;
	v->owner = ctx ? file : NULL;
	if (ctx && v->pending) {
		v->pending = false;
		ivshmem_signal(ctx);
	}
	spin_unlock_irq(&v->lock);
	if (old)
		eventfd_ctx_put(old);
	return 0;
}

/* Drops the binding if file holds it (file NULL: whoever holds it). */
static void ivshmem_unbind(struct ivshmem_vector *v, struct file *file)
{
	struct eventfd_ctx *old = NULL;

	spin_lock_irq(&v->lock);
	if (v->owner && (!file || v->owner == file)) {
		old = v->trigger;
		v->trigger = NULL;
		v->owner = NULL;
	}
	spin_unlock_irq(&v->lock);
	if (old)
		eventfd_ctx_put(old);
}

/* File operations */

static int ivshmem_open(struct inode *inode, struct file *file)
{
	struct ivshmem_dev *idev = container_of(inode->i_cdev, struct ivshmem_dev, cdev);
	struct ivshmem_file *f;

	f = kzalloc(sizeof(*f), GFP_KERNEL);
	if (!f)
		return -ENOMEM;
	get_device(&idev->dev);
	f->idev = idev;
	f->file = file;

	down_read(&idev->state);
	if (idev->dead) {
		up_read(&idev->state);
		put_device(&idev->dev);
		kfree(f);
		return -ENODEV;
	}
	mutex_lock(&idev->files_lock);
	list_add(&f->node, &idev->files);
	mutex_unlock(&idev->files_lock);
	up_read(&idev->state);

	file->private_data = f;
	return nonseekable_open(inode, file);
}

static int ivshmem_release(struct inode *inode, struct file *file)
{
	struct ivshmem_file *f = file->private_data;
	struct ivshmem_dev *idev = f->idev;
	unsigned int i;

	for (i = 0; i < idev->nvectors; i++)
		ivshmem_unbind(&idev->vectors[i], file);
	mutex_lock(&idev->files_lock);
	list_del(&f->node);
	mutex_unlock(&idev->files_lock);
	put_device(&idev->dev);
	kfree(f);
	return 0;
}

static __poll_t ivshmem_poll(struct file *file, poll_table *wait)
{
	struct ivshmem_dev *idev = ((struct ivshmem_file *)file->private_data)->idev;

	poll_wait(file, &idev->hangup, wait);
	return READ_ONCE(idev->dead) ? EPOLLHUP | EPOLLERR : 0;
}

static void ivshmem_get_info(struct ivshmem_dev *idev, struct ivshmem_info *info)
{
	memset(info, 0, sizeof(*info));
	info->shm_size = idev->shm_len;
	info->shm_offset = IVSHMEM_SHM_MMAP_OFFSET;
	info->regs_offset = IVSHMEM_REGS_MMAP_OFFSET;
	info->regs_size = idev->regs_len;
	info->iv_position = (s32)ioread32(idev->regs + IVSHMEM_REG_IV_POSITION);
	info->vectors = idev->nvectors;
	info->flags = idev->regs_mmap ? IVSHMEM_INFO_REGS_MMAP : 0;
}

static long ivshmem_set_eventfd(struct ivshmem_dev *idev, struct file *file,
				const struct ivshmem_eventfd *req)
{
	struct eventfd_ctx *ctx = NULL;
	long ret;

	if (req->vector >= idev->nvectors || req->fd < -1)
		return -EINVAL;
	if (req->fd >= 0) {
		ctx = eventfd_ctx_fdget(req->fd);
		if (IS_ERR(ctx))
			return PTR_ERR(ctx);
	}
	ret = ivshmem_bind(&idev->vectors[req->vector], file, ctx);
	if (ret && ctx)
		eventfd_ctx_put(ctx);
	return ret;
}

/*
 * User memory is copied before `state` is taken and after it is dropped: a copy may fault on
 * one of our own mappings, whose fault handler takes `state` too.
 */
static long ivshmem_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	struct ivshmem_dev *idev = ((struct ivshmem_file *)file->private_data)->idev;
	void __user *uarg = (void __user *)arg;
	union {
		struct ivshmem_info info;
		struct ivshmem_eventfd eventfd;
		struct ivshmem_ring ring;
	} u;
	long ret = 0;

	switch (cmd) {
	case IVSHMEM_IOCTL_INFO:
		break;
	case IVSHMEM_IOCTL_SET_EVENTFD:
		if (copy_from_user(&u.eventfd, uarg, sizeof(u.eventfd)))
			return -EFAULT;
		break;
	case IVSHMEM_IOCTL_RING:
		if (copy_from_user(&u.ring, uarg, sizeof(u.ring)))
			return -EFAULT;
		if (u.ring.peer > 0xffff || u.ring.vector > 0xffff)
			return -EINVAL;
		break;
	default:
		return -ENOTTY;
	}

	down_read(&idev->state);
	if (idev->dead) {
		up_read(&idev->state);
		return -ENODEV;
	}
	switch (cmd) {
	case IVSHMEM_IOCTL_INFO:
		ivshmem_get_info(idev, &u.info);
		break;
	case IVSHMEM_IOCTL_SET_EVENTFD:
		ret = ivshmem_set_eventfd(idev, file, &u.eventfd);
		break;
	case IVSHMEM_IOCTL_RING:
		iowrite32(u.ring.peer << 16 | u.ring.vector, idev->regs + IVSHMEM_REG_DOORBELL);
		break;
	}
	up_read(&idev->state);

	if (cmd == IVSHMEM_IOCTL_INFO && copy_to_user(uarg, &u.info, sizeof(u.info)))
		return -EFAULT;
	return ret;
}

static vm_fault_t ivshmem_fault(struct vm_fault *vmf)
{
	struct vm_area_struct *vma = vmf->vma;
	struct ivshmem_dev *idev = ((struct ivshmem_file *)vma->vm_file->private_data)->idev;
	unsigned long pfn;
	vm_fault_t ret;

	down_read(&idev->state);
	/* mmap checked that the whole VMA lies inside one region. */
	if (idev->dead)
		pfn = page_to_pfn(idev->scratch);
	else if (vmf->pgoff >= IVSHMEM_REGS_PGOFF)
		pfn = PHYS_PFN(idev->regs_start) + vmf->pgoff - IVSHMEM_REGS_PGOFF;
	else
		pfn = PHYS_PFN(idev->shm_start) + vmf->pgoff;
	ret = vmf_insert_pfn(vma, vmf->address, pfn);
	up_read(&idev->state);
	return ret;
}

static const struct vm_operations_struct ivshmem_vm_ops = {
	.fault = ivshmem_fault,
};

static int ivshmem_mmap(struct file *file, struct vm_area_struct *vma)
{
	struct ivshmem_dev *idev = ((struct ivshmem_file *)file->private_data)->idev;
	unsigned long first, region_pages;
	bool regs = vma->vm_pgoff >= IVSHMEM_REGS_PGOFF;
	int ret = 0;

	/* Private (copy-on-write) mappings of device memory make no sense. */
	if (!(vma->vm_flags & VM_MAYSHARE))
		return -EINVAL;

	down_read(&idev->state);
	if (idev->dead) {
		ret = -ENODEV;
		goto out;
	}
	if (regs) {
		if (!idev->regs_mmap) {
			ret = -ENODEV;
			goto out;
		}
		first = vma->vm_pgoff - IVSHMEM_REGS_PGOFF;
		region_pages = 1;
		vma->vm_page_prot = pgprot_noncached(vma->vm_page_prot);
	} else {
		first = vma->vm_pgoff;
		region_pages = idev->shm_len >> PAGE_SHIFT;
	}
	if (first >= region_pages || vma_pages(vma) > region_pages - first) {
		ret = -EINVAL;
		goto out;
	}
	ivshmem_set_vm_flags(vma, VM_IO | VM_PFNMAP | VM_DONTEXPAND | VM_DONTDUMP);
	vma->vm_ops = &ivshmem_vm_ops;
out:
	up_read(&idev->state);
	return ret;
}

static const struct file_operations ivshmem_fops = {
	.owner = THIS_MODULE,
	.open = ivshmem_open,
	.release = ivshmem_release,
	.poll = ivshmem_poll,
	.unlocked_ioctl = ivshmem_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.mmap = ivshmem_mmap,
	.llseek = noop_llseek,
};

/* The in-kernel client (ivshmem_kernel.h) */

int ivshmem_register_client(struct ivshmem_client *client)
{
	struct ivshmem_dev *idev;

	mutex_lock(&ivshmem_clients_lock);
	if (ivshmem_client) {
		mutex_unlock(&ivshmem_clients_lock);
		return -EBUSY;
	}
	ivshmem_client = client;
	list_for_each_entry(idev, &ivshmem_devices, node)
		client->add(idev);
	mutex_unlock(&ivshmem_clients_lock);
	return 0;
}
EXPORT_SYMBOL_GPL(ivshmem_register_client);

void ivshmem_unregister_client(struct ivshmem_client *client)
{
	struct ivshmem_dev *idev;

	mutex_lock(&ivshmem_clients_lock);
	if (ivshmem_client == client) {
		list_for_each_entry(idev, &ivshmem_devices, node)
			client->remove(idev);
		ivshmem_client = NULL;
	}
	mutex_unlock(&ivshmem_clients_lock);
}
EXPORT_SYMBOL_GPL(ivshmem_unregister_client);

struct device *ivshmem_device(struct ivshmem_dev *idev)
{
	return &idev->dev;
}
EXPORT_SYMBOL_GPL(ivshmem_device);

void *ivshmem_shm(struct ivshmem_dev *idev, resource_size_t *len)
{
	*len = idev->shm_len;
	return idev->shm_wb;
}
EXPORT_SYMBOL_GPL(ivshmem_shm);

u32 ivshmem_peer_id(struct ivshmem_dev *idev)
{
	return ioread32(idev->regs + IVSHMEM_REG_IV_POSITION);
}
EXPORT_SYMBOL_GPL(ivshmem_peer_id);

unsigned int ivshmem_vectors(struct ivshmem_dev *idev)
{
	return idev->nvectors;
}
EXPORT_SYMBOL_GPL(ivshmem_vectors);

void ivshmem_ring(struct ivshmem_dev *idev, u16 peer, u16 vector)
{
	iowrite32((u32)peer << 16 | vector, idev->regs + IVSHMEM_REG_DOORBELL);
}
EXPORT_SYMBOL_GPL(ivshmem_ring);

int ivshmem_claim_vector(struct ivshmem_dev *idev, unsigned int vector,
			 void (*fn)(void *data), void *data)
{
	struct ivshmem_vector *v;
	int ret = 0;

	if (vector >= idev->nvectors || !fn)
		return -EINVAL;
	v = &idev->vectors[vector];
	spin_lock_irq(&v->lock);
	if (v->kfn || v->owner) {
		ret = -EBUSY;
	} else {
		v->kfn = fn;
		v->kdata = data;
		v->pending = false;
	}
	spin_unlock_irq(&v->lock);
	return ret;
}
EXPORT_SYMBOL_GPL(ivshmem_claim_vector);

void ivshmem_release_vector(struct ivshmem_dev *idev, unsigned int vector)
{
	struct ivshmem_vector *v;

	if (vector >= idev->nvectors)
		return;
	v = &idev->vectors[vector];
	/* The handler calls kfn under the lock, so none runs once it is cleared. */
	spin_lock_irq(&v->lock);
	v->kfn = NULL;
	v->kdata = NULL;
	v->pending = false;
	spin_unlock_irq(&v->lock);
}
EXPORT_SYMBOL_GPL(ivshmem_release_vector);

void ivshmem_sync_vector(struct ivshmem_dev *idev, unsigned int vector)
{
	if (vector < idev->nvectors && idev->vectors[vector].irq_requested)
		synchronize_irq(pci_irq_vector(idev->pdev, vector));
}
EXPORT_SYMBOL_GPL(ivshmem_sync_vector);

/* PCI driver */

static void ivshmem_dev_release(struct device *dev)
{
	struct ivshmem_dev *idev = to_ivshmem(dev);

	ida_free(&ivshmem_ida, idev->index);
	if (idev->scratch)
		__free_page(idev->scratch);
	kfree(idev);
}

/*
 * Claims the rest of BAR0's page so the page can be given to userspace without exposing
 * another device's registers; true when BAR0 may be mmap'd.
 */
static bool ivshmem_claim_regs_page(struct ivshmem_dev *idev)
{
	struct resource *bar = &idev->pdev->resource[IVSHMEM_REGS_BAR];

	if (!PAGE_ALIGNED(idev->regs_start))
		return false;
	if (idev->regs_len >= PAGE_SIZE)
		return true;
	idev->regs_page_rest.name = "ivshmem registers page";
	idev->regs_page_rest.start = bar->end + 1;
	idev->regs_page_rest.end = bar->start + PAGE_SIZE - 1;
	idev->regs_page_rest.flags = bar->flags;
	return bar->parent && !request_resource(bar->parent, &idev->regs_page_rest);
}

/* Undoes what probe set up; safe on a partly set-up device. */
static void ivshmem_teardown(struct ivshmem_dev *idev)
{
	struct pci_dev *pdev = idev->pdev;
	unsigned int i;

	for (i = 0; i < idev->nvectors; i++) {
		struct ivshmem_vector *v = &idev->vectors[i];

		if (v->irq_requested)
			free_irq(pci_irq_vector(pdev, i), v);
		v->irq_requested = false;
		ivshmem_unbind(v, NULL);
	}
	if (idev->irqs_allocated)
		pci_free_irq_vectors(pdev);
	idev->irqs_allocated = false;
	if (idev->shm_wb)
		memunmap(idev->shm_wb);
	idev->shm_wb = NULL;
	if (idev->regs_mmap && idev->regs_len < PAGE_SIZE)
		release_resource(&idev->regs_page_rest);
	idev->regs_mmap = false;
	if (idev->regs)
		pci_iounmap(pdev, idev->regs);
	idev->regs = NULL;
	if (idev->regions_requested)
		pci_release_regions(pdev);
	idev->regions_requested = false;
	if (idev->enabled) {
		pci_clear_master(pdev);
		pci_disable_device(pdev);
	}
	idev->enabled = false;
}

static int ivshmem_setup_vectors(struct ivshmem_dev *idev, int offered)
{
	struct pci_dev *pdev = idev->pdev;
	unsigned int i;
	int ret;

	if (offered <= 0)
		return 0;
	ret = pci_alloc_irq_vectors(pdev, 1, offered, PCI_IRQ_MSIX);
	if (ret < 0)
		return ret;
	idev->irqs_allocated = true;
	idev->nvectors = ret;
	for (i = 0; i < idev->nvectors; i++)
		spin_lock_init(&idev->vectors[i].lock);
	for (i = 0; i < idev->nvectors; i++) {
		struct ivshmem_vector *v = &idev->vectors[i];

		snprintf(v->name, sizeof(v->name), "ivshmem%d-%u", idev->index, i);
		ret = request_irq(pci_irq_vector(pdev, i), ivshmem_irq, 0, v->name, v);
		if (ret)
			return ret;
		v->irq_requested = true;
	}
	return 0;
}

static int ivshmem_setup_bars(struct ivshmem_dev *idev)
{
	struct pci_dev *pdev = idev->pdev;
	int ret;

	if (!(pci_resource_flags(pdev, IVSHMEM_REGS_BAR) & IORESOURCE_MEM) ||
	    !(pci_resource_flags(pdev, IVSHMEM_SHM_BAR) & IORESOURCE_MEM)) {
		dev_err(&pdev->dev, "BAR0 or BAR2 is not a memory BAR\n");
		return -ENODEV;
	}
	idev->regs_start = pci_resource_start(pdev, IVSHMEM_REGS_BAR);
	idev->regs_len = pci_resource_len(pdev, IVSHMEM_REGS_BAR);
	idev->shm_start = pci_resource_start(pdev, IVSHMEM_SHM_BAR);
	idev->shm_len = pci_resource_len(pdev, IVSHMEM_SHM_BAR);
	if (idev->regs_len < IVSHMEM_MIN_REGS_SIZE || !idev->shm_len) {
		dev_err(&pdev->dev, "BAR0 (%pa bytes) or BAR2 (%pa bytes) too small\n",
			&idev->regs_len, &idev->shm_len);
		return -ENODEV;
	}
	if (!PAGE_ALIGNED(idev->shm_start) || !PAGE_ALIGNED(idev->shm_len) ||
	    idev->shm_len >= IVSHMEM_REGS_MMAP_OFFSET) {
		dev_err(&pdev->dev, "BAR2 %pR cannot be mapped by pages\n",
			&pdev->resource[IVSHMEM_SHM_BAR]);
		return -ENODEV;
	}

	ret = pci_request_regions(pdev, "ivshmem");
	if (ret)
		return ret;
	idev->regions_requested = true;
	idev->regs = pci_iomap(pdev, IVSHMEM_REGS_BAR, 0);
	if (!idev->regs)
		return -ENOMEM;
	idev->regs_mmap = ivshmem_claim_regs_page(idev);
	if (!idev->regs_mmap)
		dev_info(&pdev->dev, "BAR0 shares its page: doorbells by ioctl only\n");
	/* Sets the memory type user mappings get to write-back (without it: uncached). */
	idev->shm_wb = memremap(idev->shm_start, idev->shm_len, MEMREMAP_WB);
	if (!idev->shm_wb)
		dev_warn(&pdev->dev, "no write-back mapping of BAR2: it will be mapped uncached\n");
	return 0;
}

static int ivshmem_probe(struct pci_dev *pdev, const struct pci_device_id *id)
{
	struct ivshmem_dev *idev;
	int offered, ret;

	offered = pci_msix_vec_count(pdev);
	if (offered < 0)
		offered = 0;
	idev = kzalloc(struct_size(idev, vectors, offered), GFP_KERNEL);
	if (!idev)
		return -ENOMEM;
	idev->index = ida_alloc_max(&ivshmem_ida, IVSHMEM_MAX_DEVICES - 1, GFP_KERNEL);
	if (idev->index < 0) {
		ret = idev->index;
		kfree(idev);
		return ret;
	}
	idev->pdev = pdev;
	idev->scratch = alloc_page(GFP_KERNEL | __GFP_ZERO);
	init_rwsem(&idev->state);
	init_waitqueue_head(&idev->hangup);
	mutex_init(&idev->files_lock);
	INIT_LIST_HEAD(&idev->files);

	/* From here on the device's refcount frees idev. */
	device_initialize(&idev->dev);
	idev->dev.class = &ivshmem_class;
	idev->dev.parent = &pdev->dev;
	idev->dev.devt = MKDEV(MAJOR(ivshmem_devt), idev->index);
	idev->dev.release = ivshmem_dev_release;
	ret = dev_set_name(&idev->dev, "ivshmem%d", idev->index);
	if (ret)
		goto err_put;
	if (!idev->scratch) {
		ret = -ENOMEM;
		goto err_put;
	}

	ret = pci_enable_device_mem(pdev);
	if (ret)
		goto err_put;
	idev->enabled = true;
	/* MSI-X messages are bus-master writes. */
	pci_set_master(pdev);
	ret = ivshmem_setup_bars(idev);
	if (ret)
		goto err_teardown;
	ret = ivshmem_setup_vectors(idev, offered);
	if (ret)
		goto err_teardown;

	pci_set_drvdata(pdev, idev);
	cdev_init(&idev->cdev, &ivshmem_fops);
	idev->cdev.owner = THIS_MODULE;
	ret = cdev_device_add(&idev->cdev, &idev->dev);
	if (ret)
		goto err_teardown;
	dev_info(&pdev->dev, "%s: shared memory %pR, %u vector(s), IVPosition %d\n",
		 dev_name(&idev->dev), &pdev->resource[IVSHMEM_SHM_BAR], idev->nvectors,
		 (s32)ioread32(idev->regs + IVSHMEM_REG_IV_POSITION));
	mutex_lock(&ivshmem_clients_lock);
	list_add_tail(&idev->node, &ivshmem_devices);
	if (ivshmem_client)
		ivshmem_client->add(idev);
	mutex_unlock(&ivshmem_clients_lock);
	return 0;

err_teardown:
	ivshmem_teardown(idev);
err_put:
	put_device(&idev->dev);
	return ret;
}

static void ivshmem_remove(struct pci_dev *pdev)
{
	struct ivshmem_dev *idev = pci_get_drvdata(pdev);
	struct ivshmem_file *f;

	/* The client stops using the device while its memory and registers are still there. */
	mutex_lock(&ivshmem_clients_lock);
	if (ivshmem_client)
		ivshmem_client->remove(idev);
	list_del(&idev->node);
	mutex_unlock(&ivshmem_clients_lock);

	cdev_device_del(&idev->cdev, &idev->dev);
	down_write(&idev->state);
	idev->dead = true;
	up_write(&idev->state);
	wake_up_all(&idev->hangup);

	/* No new page can be inserted now; take away those that were. */
	mutex_lock(&idev->files_lock);
	list_for_each_entry(f, &idev->files, node)
		unmap_mapping_range(f->file->f_mapping, 0, 0, 1);
	mutex_unlock(&idev->files_lock);

	ivshmem_teardown(idev);
	put_device(&idev->dev);
}

static const struct pci_device_id ivshmem_ids[] = {
	{ PCI_DEVICE(PCI_VENDOR_ID_REDHAT_QUMRANET, 0x1110) },
	{ }
};
MODULE_DEVICE_TABLE(pci, ivshmem_ids);

static struct pci_driver ivshmem_driver = {
	.name = "ivshmem",
	.id_table = ivshmem_ids,
	.probe = ivshmem_probe,
	.remove = ivshmem_remove,
};

static int __init ivshmem_init(void)
{
	int ret;

	ret = alloc_chrdev_region(&ivshmem_devt, 0, IVSHMEM_MAX_DEVICES, "ivshmem");
	if (ret)
		return ret;
	ret = class_register(&ivshmem_class);
	if (ret)
		goto err_chrdev;
	ret = pci_register_driver(&ivshmem_driver);
	if (ret)
		goto err_class;
	return 0;

err_class:
	class_unregister(&ivshmem_class);
err_chrdev:
	unregister_chrdev_region(ivshmem_devt, IVSHMEM_MAX_DEVICES);
	return ret;
}

static void __exit ivshmem_exit(void)
{
	pci_unregister_driver(&ivshmem_driver);
	class_unregister(&ivshmem_class);
	unregister_chrdev_region(ivshmem_devt, IVSHMEM_MAX_DEVICES);
	ida_destroy(&ivshmem_ida);
}

module_init(ivshmem_init);
module_exit(ivshmem_exit);

MODULE_DESCRIPTION("Character devices for ivshmem PCI devices (shared memory, doorbells, MSI-X eventfds)");
MODULE_LICENSE("GPL");
