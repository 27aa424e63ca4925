package azurite_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	sdkblob "github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"

	"github.com/skrfs/skrfs/integration/azurite"
)

func roundTrip(t *testing.T, c *container.Client) {
	t.Helper()
	ctx := context.Background()
	want := []byte("hello, azurite")
	if _, err := c.NewBlockBlobClient("a/b").UploadBuffer(ctx, want, nil); err != nil {
		t.Fatalf("upload: %v", err)
	}
	resp, err := c.NewBlobClient("a/b").DownloadStream(ctx, nil)
	if err != nil {
		t.Fatalf("download: %v", err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("download = %q, %v", got, err)
	}
}

func TestHTTPSharedKey(t *testing.T) {
	inst := azurite.Start(t, azurite.Options{})
	if !strings.HasPrefix(inst.Endpoint, "http://127.0.0.1:") || inst.HTTPClient == nil || inst.CAPool != nil {
		t.Fatalf("instance %+v", inst)
	}
	roundTrip(t, inst.CreateContainer(t, "plain"))

	// The connection string reaches the same account.
	c, err := container.NewClientFromConnectionString(inst.ConnectionString(), "plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.NewBlobClient("a/b").GetProperties(context.Background(), nil); err != nil {
		t.Fatalf("via connection string: %v", err)
	}
}

func TestHTTPSOAuth(t *testing.T) {
	inst := azurite.Start(t, azurite.Options{OAuth: true})
	if !strings.HasPrefix(inst.Endpoint, "https://127.0.0.1:") || inst.CAPool == nil || inst.CAFile == "" {
		t.Fatalf("instance %+v", inst)
	}
	inst.CreateContainer(t, "secure") // shared key works over HTTPS too
	opts := &container.ClientOptions{ClientOptions: azcore.ClientOptions{Transport: inst.HTTPClient}}
	c, err := container.NewClient(inst.ContainerURL("secure"), &azurite.TokenCredential{}, opts)
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, c)

	for name, cred := range map[string]*azurite.TokenCredential{
		"wrong audience": {Audience: "https://vault.azure.net"},
		"expired":        {Lifetime: -1},
	} {
		bad, err := container.NewClient(inst.ContainerURL("secure"), cred, opts)
		if err != nil {
			t.Fatal(err)
		}
		_, err = bad.GetProperties(context.Background(), nil)
		var re *azcore.ResponseError
		if !errors.As(err, &re) || re.StatusCode != 403 {
			t.Errorf("%s token: %v, want 403", name, err)
		}
	}

	// The default client does not trust the instance's CA.
	plainClient, err := sdkblob.NewClientWithNoCredential(inst.Endpoint,
		&sdkblob.ClientOptions{ClientOptions: azcore.ClientOptions{Retry: policy.RetryOptions{MaxRetries: -1}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := plainClient.ServiceClient().NewContainerClient("secure").GetProperties(context.Background(), nil); err == nil ||
		!strings.Contains(err.Error(), "certificate") {
		t.Errorf("untrusted CA: %v, want a certificate error", err)
	}
}

func TestStopKillsProcess(t *testing.T) {
	inst, stop, err := azurite.StartMain(azurite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	pid := inst.PID()
	addr := strings.TrimPrefix(strings.TrimSuffix(inst.Endpoint, "/"+azurite.AccountName), "http://")
	stop()
	stop() // idempotent
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("azurite pid %d still exists after stop: %v", pid, err)
	}
	if conn, err := net.Dial("tcp", addr); err == nil {
		conn.Close()
		t.Errorf("%s still accepts connections after stop", addr)
	}
}

func TestMissingBinary(t *testing.T) {
	t.Setenv(azurite.EnvBin, "/nonexistent/azurite-blob")
	if _, err := azurite.Bin(); err == nil || !strings.Contains(err.Error(), azurite.EnvBin) || !strings.Contains(err.Error(), "make azurite") {
		t.Fatalf("Bin() = %v, want an error naming $%s", err, azurite.EnvBin)
	}
	t.Setenv(azurite.EnvBin, "")
	if _, err := azurite.Bin(); err != nil {
		t.Fatalf("Bin() with the repo's install = %v", err)
	}
}
