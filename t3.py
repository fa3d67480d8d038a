import json
exec(open('/tmp/review-rev/tun.py').read().replace('/tmp/review-rev/ready','/tmp/review-rev/up/readyA'))
s1,r=connect('svc.test:47001'); print('connect via upstream',r, alive(s1))
print(admin('/domains',{'deny':['127.0.0.1']})); time.sleep(0.5)
s2,r=connect('svc.test:47001'); print('new connect after deny', r)
print('old tunnel after deny:', alive(s1))
print(admin('/domains',{'deny':['svc.test']})); time.sleep(0.5)
print('old tunnel after name deny:', alive(s1))
